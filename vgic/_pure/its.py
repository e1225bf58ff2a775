"""KVM's emulated ITS: the pure-Python twin of ``vgic._core.its`` (see
there, and its-facts-A/B, for the rules and their sources)."""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import its_state
from ..ich import U64, check_int
from ..regmap import (
    COLLECTION_NOT_MAPPED,
    E_ITS_CLEAR_UNMAPPED_INTERRUPT,
    E_ITS_DISCARD_UNMAPPED_INTERRUPT,
    E_ITS_INT_UNMAPPED_INTERRUPT,
    E_ITS_INV_UNMAPPED_INTERRUPT,
    E_ITS_INVALL_UNMAPPED_COLLECTION,
    E_ITS_MAPC_COLLECTION_OOR,
    E_ITS_MAPC_PROCNUM_OOR,
    E_ITS_MAPD_DEVICE_OOR,
    E_ITS_MAPD_ITTSIZE_OOR,
    E_ITS_MAPTI_ID_OOR,
    E_ITS_MAPTI_PHYSICALID_OOR,
    E_ITS_MAPTI_UNMAPPED_DEVICE,
    E_ITS_MOVALL_PROCNUM_OOR,
    E_ITS_MOVI_UNMAPPED_COLLECTION,
    E_ITS_MOVI_UNMAPPED_INTERRUPT,
    FRAMES,
    GITS_BASER_ENTRY_SIZE_MASK,
    GITS_BASER_ENTRY_SIZE_SHIFT,
    GITS_BASER_INDIRECT,
    GITS_BASER_SIZE_MASK,
    GITS_BASER_TYPE_COLLECTION,
    GITS_BASER_TYPE_DEVICE,
    GITS_BASER_TYPE_MASK,
    GITS_BASER_TYPE_SHIFT,
    GITS_BASER_VALID,
    GITS_CBASER_ADDR_MASK,
    GITS_CIDR0,
    GITS_CMD_CLEAR,
    GITS_CMD_DISCARD,
    GITS_CMD_INT,
    GITS_CMD_INV,
    GITS_CMD_INVALL,
    GITS_CMD_MAPC,
    GITS_CMD_MAPD,
    GITS_CMD_MAPI,
    GITS_CMD_MAPTI,
    GITS_CMD_MOVALL,
    GITS_CMD_MOVI,
    GITS_CMD_OFFSET_MASK,
    GITS_CMD_SYNC,
    GITS_CTLR_ENABLED,
    GITS_IIDR_REV_SHIFT,
    GITS_PIDR0,
    GITS_PIDR1,
    GITS_PIDR2,
    GITS_PIDR4,
    GITS_TYPER_VALUE,
    INITIAL_BASER_COLLECTION,
    INITIAL_BASER_DEVICE,
    ITS_ABI_REVISIONS,
    ITS_CMD_SIZE,
    ITS_ESZ,
    ITS_ITT_ADDR_MASK,
    ITS_L1E_VALID,
    ITS_L2_ADDR_MASK,
    ITS_MAX_EVENTID_BITS,
    KVM_ITS_CTE_RDBASE_SHIFT,
    KVM_ITS_DTE_ITTADDR_SHIFT,
    KVM_ITS_DTE_NEXT_SHIFT,
    KVM_ITS_ITE_ICID_MASK,
    KVM_ITS_ITE_NEXT_SHIFT,
    KVM_ITS_ITE_PINTID_SHIFT,
    LPI_BASE,
    VITS_DTE_MAX_DEVID_OFFSET,
    VITS_ITE_MAX_EVENTID_OFFSET,
)
from . import lpi as L
from .gic import Gic
from .mmio import Ops

EBUSY, EEXIST, EFAULT, EINVAL, ENOMEM, ENODEV = (errno.EBUSY, errno.EEXIST, errno.EFAULT, errno.EINVAL,
                                                 errno.ENOMEM, errno.ENODEV)
NR_IDS = 1 << 16


@dataclass
class _Ite:
    lpi: int
    icid: int
    has_coll: bool = True       # KVM's ite->collection != NULL


@dataclass
class _Dev:
    itt_addr: int
    nbits: int
    ites: dict[int, _Ite] = field(default_factory=dict)   # by EventID


def _extract(value: int, offset: int, size: int) -> int:
    return (value >> (8 * (offset & 4))) & ((1 << (8 * size)) - 1)


def _update(reg: int, offset: int, size: int, value: int) -> int:
    lower = 8 * (offset & 4)
    mask = ((1 << (8 * size)) - 1) << lower
    return (reg & ~mask) | ((value << lower) & mask)


def _baser_base(baser: int) -> int:
    return (baser & 0x0000FFFFFFFF0000) | (((baser >> 12) & 0xF) << 48)


def _baser_bytes(baser: int) -> int:
    return ((baser & GITS_BASER_SIZE_MASK) + 1) << 16


class Its:
    """The emulated ITS of a VM whose :class:`vgic._pure.gic.Gic` has LPIs."""

    nr_intids = 0
    opaque = True
    #: The ITS frame's handler families (the bus reads them; bound below).
    ops: ClassVar[dict[str, Ops]]

    def __init__(self, gic: Gic, max_ites: int = 1 << 20) -> None:
        if not isinstance(gic, Gic):
            raise TypeError(f"gic must be a vgic._pure.gic.Gic, not {type(gic).__name__}")
        if getattr(gic, "_nr_vcpus", None) is None:
            raise TypeError("gic is not initialised")
        if not gic.nr_lpis:
            raise ValueError("the Gic has no LPIs: build it with lpis=True for an ITS")
        self.max_ites = check_int("max_ites", max_ites, 1, 1 << 32)
        self.gic = gic
        self.enabled = 0
        self.abi_rev = 0
        self.cbaser = 0
        self.cwriter = 0
        self.creadr = 0
        self.baser = [INITIAL_BASER_DEVICE, INITIAL_BASER_COLLECTION]
        self.devs: dict[int, _Dev] = {}
        self.colls: dict[int, int] = {}         # ICID -> target, in creation order
        self.nr_ites = 0

    @property
    def ops_names(self) -> list[str]:
        return list(OPS)

    @property
    def state_nbytes(self) -> int:
        return 0

    # ---- tables ---------------------------------------------------------------
    def _mem(self) -> Any:
        return self.gic._mem

    def _check_id(self, baser: int, id_: int) -> int | None:
        """vgic_its_check_id: the entry's address, or None."""
        typ = (baser & GITS_BASER_TYPE_MASK) >> GITS_BASER_TYPE_SHIFT
        esz = ((baser & GITS_BASER_ENTRY_SIZE_MASK) >> GITS_BASER_ENTRY_SIZE_SHIFT) + 1
        size, base = _baser_bytes(baser), _baser_base(baser)
        per_page = 65536 // esz
        if typ == GITS_BASER_TYPE_DEVICE:
            if id_ > 0xFFFF:
                return None
        elif typ == GITS_BASER_TYPE_COLLECTION:
            if id_ >= 0x10000:
                return None
        else:
            return None
        if not baser & GITS_BASER_INDIRECT:
            if id_ >= size // esz:
                return None
            addr = base + id_ * esz
        else:
            index = id_ // per_page
            if index >= size // 8:
                return None
            l1 = self._mem().read64(base + index * 8)
            if l1 is None or not l1 & ITS_L1E_VALID:
                return None
            addr = (l1 & ITS_L2_ADDR_MASK) + (id_ % per_page) * esz
        return addr if self._mem().ok(addr, esz) else None

    def _find_ite(self, devid: int, event: int) -> tuple[_Dev, _Ite] | None:
        dev = self.devs.get(devid)
        if dev is None:
            return None
        ite = dev.ites.get(event)
        return None if ite is None else (dev, ite)

    def _new_ite(self, dev: _Dev, event: int, lpi: int, icid: int) -> _Ite | None:
        if self.nr_ites >= self.max_ites:
            return None
        ite = _Ite(lpi, icid)
        dev.ites[event] = ite
        self.nr_ites += 1
        return ite

    def _drop_ite(self, dev: _Dev, event: int) -> None:
        del dev.ites[event]
        self.nr_ites -= 1

    def _free_dev(self, devid: int) -> None:
        dev = self.devs.pop(devid, None)
        if dev is None:
            return
        for event in sorted(dev.ites):
            L.lpi_put(self.gic, dev.ites[event].lpi)
        self.nr_ites -= len(dev.ites)

    def _free_all_devs(self) -> None:
        for devid in sorted(self.devs):
            self._free_dev(devid)

    def _coll_mapped(self, icid: int) -> bool:
        return self.colls.get(icid, COLLECTION_NOT_MAPPED) != COLLECTION_NOT_MAPPED

    def _coll_vcpu(self, icid: int) -> int:
        t = self.colls.get(icid, COLLECTION_NOT_MAPPED)
        return t if t < self.gic.nr_vcpus else -1

    def _free_coll(self, icid: int) -> None:
        if icid not in self.colls:
            return
        for devid in sorted(self.devs):
            for ite in self.devs[devid].ites.values():
                if ite.has_coll and ite.icid == icid:
                    ite.has_coll = False
        del self.colls[icid]

    def _free_all_colls(self) -> None:
        for icid in reversed(list(self.colls)):
            self._free_coll(icid)

    def _set_lpi_target(self, lpi: int, vcpu: int) -> None:
        irq = self.gic._lpis.get(lpi)
        if irq is not None:
            irq.target_vcpu = vcpu

    # ---- MSI / INT -------------------------------------------------------------
    def _trigger(self, devid: int, event: int) -> int:
        if not self.enabled:
            return -EBUSY
        found = self._find_ite(devid, event)
        if found is None or not found[1].has_coll or not self._coll_mapped(found[1].icid):
            return E_ITS_INT_UNMAPPED_INTERRUPT
        ite = found[1]
        v = self._coll_vcpu(ite.icid)
        if v < 0:
            return E_ITS_INT_UNMAPPED_INTERRUPT
        if not L.lpis_enabled_on(self.gic, v):
            return -EBUSY
        L._set(self.gic, self.gic._lpis[ite.lpi], "pending_latch", True)
        return 0

    # ---- commands --------------------------------------------------------------
    def _mapd(self, c: list[int]) -> int:
        devid, size, valid = c[0] >> 32, c[1] & 0x1F, (c[2] >> 63) & 1
        gpa = self._check_id(self.baser[0], devid)
        if gpa is None:
            return E_ITS_MAPD_DEVICE_OOR
        if valid and size + 1 > ITS_MAX_EVENTID_BITS:
            return E_ITS_MAPD_ITTSIZE_OOR
        self._free_dev(devid)
        if not valid:
            self._mem().write64(gpa, 0)
            return 0
        self.devs[devid] = _Dev(c[2] & ITS_ITT_ADDR_MASK, size + 1)
        return 0

    def _mapc(self, c: list[int]) -> int:
        icid, target = c[2] & 0xFFFF, (c[2] >> 16) & 0xFFFFFFFF
        if not (c[2] >> 63) & 1:
            self._free_coll(icid)
            return 0
        if target >= self.gic.nr_vcpus:
            return E_ITS_MAPC_PROCNUM_OOR
        if icid not in self.colls:
            if self._check_id(self.baser[1], icid) is None:
                return E_ITS_MAPC_COLLECTION_OOR
            self.colls[icid] = target
            return 0
        self.colls[icid] = target
        for devid in sorted(self.devs):
            for ite in self.devs[devid].ites.values():
                if ite.has_coll and ite.icid == icid:
                    self._set_lpi_target(ite.lpi, target)
        return 0

    def _map_ite(self, devid: int, event: int, lpi: int, icid: int) -> int:
        dev = self.devs.get(devid)
        if dev is None:
            return E_ITS_MAPTI_UNMAPPED_DEVICE
        if event >= 1 << dev.nbits or not self._mem().ok(dev.itt_addr + event * ITS_ESZ, ITS_ESZ):
            return E_ITS_MAPTI_ID_OOR
        if lpi < LPI_BASE or lpi >= L.lpi_intid_limit(self.gic) or lpi >= 0x80000000:
            return E_ITS_MAPTI_PHYSICALID_OOR
        if event in dev.ites:
            return 0
        made = False
        if icid not in self.colls:
            if self._check_id(self.baser[1], icid) is None:
                return E_ITS_MAPC_COLLECTION_OOR
            self.colls[icid] = COLLECTION_NOT_MAPPED
            made = True
        if self._new_ite(dev, event, lpi, icid) is None:
            if made:
                self._free_coll(icid)
            return -ENOMEM
        r = L.lpi_add(self.gic, lpi, self._coll_vcpu(icid))
        if r < 0:
            self._drop_ite(dev, event)
            if made:
                self._free_coll(icid)
        return r

    def _movi(self, c: list[int]) -> int:
        found = self._find_ite(c[0] >> 32, c[1] & 0xFFFFFFFF)
        icid = c[2] & 0xFFFF
        if found is None:
            return E_ITS_MOVI_UNMAPPED_INTERRUPT
        ite = found[1]
        if not ite.has_coll or not self._coll_mapped(ite.icid) or not self._coll_mapped(icid):
            return E_ITS_MOVI_UNMAPPED_COLLECTION
        ite.icid, ite.has_coll = icid, True
        self._set_lpi_target(ite.lpi, self._coll_vcpu(icid))
        return 0

    def _discard(self, c: list[int]) -> int:
        devid, event = c[0] >> 32, c[1] & 0xFFFFFFFF
        found = self._find_ite(devid, event)
        if found is None or not found[1].has_coll or not self._coll_mapped(found[1].icid):
            return E_ITS_DISCARD_UNMAPPED_INTERRUPT
        dev, ite = found
        L.lpi_put(self.gic, ite.lpi)
        self._drop_ite(dev, event)
        self._mem().write64(dev.itt_addr + event * ITS_ESZ, 0)
        return 0

    def _clear(self, c: list[int]) -> int:
        found = self._find_ite(c[0] >> 32, c[1] & 0xFFFFFFFF)
        if found is None:
            return E_ITS_CLEAR_UNMAPPED_INTERRUPT
        L._set(self.gic, self.gic._lpis[found[1].lpi], "pending_latch", False)
        return 0

    def _inv(self, c: list[int]) -> int:
        found = self._find_ite(c[0] >> 32, c[1] & 0xFFFFFFFF)
        if found is None:
            return E_ITS_INV_UNMAPPED_INTERRUPT
        return L.update_lpi_config(self.gic, found[1].lpi, -1)

    def _invall(self, c: list[int]) -> int:
        icid = c[2] & 0xFFFF
        v = self._coll_vcpu(icid)
        if not self._coll_mapped(icid) or v < 0:
            return E_ITS_INVALL_UNMAPPED_COLLECTION
        L.lpi_invall(self.gic, v)
        return 0

    def _movall(self, c: list[int]) -> int:
        t1, t2 = (c[2] >> 16) & 0xFFFFFFFF, (c[3] >> 16) & 0xFFFFFFFF
        if t1 >= self.gic.nr_vcpus or t2 >= self.gic.nr_vcpus:
            return E_ITS_MOVALL_PROCNUM_OOR
        if t1 != t2:
            for irq in self.gic._lpis.values():     # every LPI of the VM (Linux 6.10+)
                irq.target_vcpu = t2
        return 0

    def _handle(self, c: list[int]) -> int:
        op = c[0] & 0xFF
        if op == GITS_CMD_MAPD:
            return self._mapd(c)
        if op == GITS_CMD_MAPC:
            return self._mapc(c)
        if op == GITS_CMD_MAPTI:
            return self._map_ite(c[0] >> 32, c[1] & 0xFFFFFFFF, c[1] >> 32, c[2] & 0xFFFF)
        if op == GITS_CMD_MAPI:
            return self._map_ite(c[0] >> 32, c[1] & 0xFFFFFFFF, c[1] & 0xFFFFFFFF, c[2] & 0xFFFF)
        if op == GITS_CMD_MOVI:
            return self._movi(c)
        if op == GITS_CMD_DISCARD:
            return self._discard(c)
        if op == GITS_CMD_CLEAR:
            return self._clear(c)
        if op == GITS_CMD_INT:
            return self._trigger(c[0] >> 32, c[1] & 0xFFFFFFFF)
        if op == GITS_CMD_INV:
            return self._inv(c)
        if op == GITS_CMD_INVALL:
            return self._invall(c)
        if op == GITS_CMD_MOVALL:
            return self._movall(c)
        if op == GITS_CMD_SYNC:
            return 0
        return -ENODEV

    def _cmdq_bytes(self) -> int:
        return its_state.cmdq_bytes(self.cbaser)

    def _process(self) -> None:
        if not self.enabled:
            return
        base, size = self.cbaser & GITS_CBASER_ADDR_MASK, self._cmdq_bytes()
        mem = self._mem()
        while self.creadr != self.cwriter:
            words = [mem.read64(base + self.creadr + 8 * i) for i in range(4)]
            if None not in words:
                self._handle(words)
            self.creadr += ITS_CMD_SIZE
            if self.creadr >= size:
                self.creadr = 0

    # ---- KVM's side --------------------------------------------------------------
    def signal_msi(self, devid: int, event: int) -> int:
        """KVM_SIGNAL_MSI with KVM_MSI_VALID_DEVID: 1, 0 or -EBUSY (see the core)."""
        d = check_int("devid", devid, 0, 0xFFFFFFFF)
        e = check_int("event", event, 0, 0xFFFFFFFF)
        return _msi_result(self._trigger(d, e))

    def signal_msi_batch(self, devids: Any, events: Any) -> np.ndarray:
        """signal_msi for each (devid, event), all checked first; int32 results."""
        d = its_state.u32_array(devids, "devids")
        e = its_state.u32_array(events, "events")
        if d.shape != e.shape:
            raise ValueError("devids and events must be 1-D arrays of one length")
        return np.array([_msi_result(self._trigger(a, b)) for a, b in zip(d.tolist(), e.tolist())],
                        dtype=np.int32)

    def save_tables(self) -> int:
        """KVM_DEV_ARM_ITS_SAVE_TABLES: 0 or a negative errno."""
        r = self._save_devices()
        return r if r else self._save_collections()

    def _save_devices(self) -> int:
        # KVM's order of guest-memory accesses: the slot, the ITT, the later
        # devices' slots (for `next`), the DTE (see the core).
        baser = self.baser[0]
        if not baser & GITS_BASER_VALID:
            return 0
        mem = self._mem()
        order = sorted(self.devs)
        for k, devid in enumerate(order):
            gpa = self._check_id(baser, devid)
            if gpa is None:
                continue
            dev = self.devs[devid]
            if not self._save_itt(dev):
                return -EFAULT
            nxt = 0
            for later in order[k + 1:]:
                if self._check_id(baser, later) is not None:
                    nxt = min(later - devid, VITS_DTE_MAX_DEVID_OFFSET)
                    break
            v = ((1 << 63) | (nxt << KVM_ITS_DTE_NEXT_SHIFT) | ((dev.itt_addr >> 8) << KVM_ITS_DTE_ITTADDR_SHIFT)
                 | (dev.nbits - 1))
            if not mem.write64(gpa, v):
                return -EFAULT
        return 0

    def _save_itt(self, dev: _Dev) -> bool:
        # Each ITE in EventID order; one without a collection is written 0
        # and `next` skips it.
        events = sorted(dev.ites)
        nexts = [0] * len(events)
        following = -1
        for i in range(len(events) - 1, -1, -1):
            if following >= 0:
                nexts[i] = min(following - events[i], VITS_ITE_MAX_EVENTID_OFFSET)
            if dev.ites[events[i]].has_coll:
                following = events[i]
        mem = self._mem()
        for i, e in enumerate(events):
            ite = dev.ites[e]
            v = ((nexts[i] << KVM_ITS_ITE_NEXT_SHIFT) | (ite.lpi << KVM_ITS_ITE_PINTID_SHIFT) | ite.icid
                 if ite.has_coll else 0)
            if not mem.write64(dev.itt_addr + e * ITS_ESZ, v):
                return False
        return True

    def _save_collections(self) -> int:
        baser = self.baser[1]
        if not baser & GITS_BASER_VALID:
            return 0
        base, size, mem = _baser_base(baser), _baser_bytes(baser), self._mem()
        for k, (icid, target) in enumerate(self.colls.items()):
            if (k + 1) * ITS_ESZ > size:
                return -EINVAL
            if not mem.write64(base + k * ITS_ESZ, (1 << 63) | (target << KVM_ITS_CTE_RDBASE_SHIFT) | icid):
                return -EFAULT
        n = len(self.colls)
        if n * ITS_ESZ < size and not mem.write64(base + n * ITS_ESZ, 0):
            return -EFAULT
        return 0

    def _scan(self, base: int, size: int, start: int, fn: Any) -> int:
        mem, id_ = self._mem(), start
        while True:
            entry = mem.read64(base)
            if entry is None:
                return -EFAULT
            r = fn(id_ & 0xFFFFFFFF, entry)      # KVM's ids are 32-bit (as the core's)
            if r <= 0:
                return int(r)
            step = r * ITS_ESZ
            if step >= size:
                return 1
            id_ += r
            base += step
            size -= step

    def _restore_ite(self, dev: _Dev, event: int, v: int) -> int:
        lpi, icid, nxt = (v >> KVM_ITS_ITE_PINTID_SHIFT) & 0xFFFFFFFF, v & 0xFFFF, v >> KVM_ITS_ITE_NEXT_SHIFT
        if lpi == 0:
            return 1
        if lpi < LPI_BASE or event + nxt >= 1 << dev.nbits or icid not in self.colls:
            return -EINVAL
        if not self._mem().ok(dev.itt_addr + event * ITS_ESZ, ITS_ESZ):
            return -EINVAL
        if lpi >= LPI_BASE + self.gic.nr_lpis:
            return -EINVAL          # the model holds LPIs below 2**16 only (see the core)
        if self._new_ite(dev, event, lpi, icid) is None:
            return -ENOMEM
        r = L.lpi_add(self.gic, lpi, self._coll_vcpu(icid))
        if r < 0:
            self._drop_ite(dev, event)
            return r
        return nxt

    def _restore_dte(self, id_: int, v: int) -> int:
        nxt = (v >> KVM_ITS_DTE_NEXT_SHIFT) & 0x3FFF
        itt = ((v >> KVM_ITS_DTE_ITTADDR_SHIFT) & ((1 << 44) - 1)) << 8
        nbits = (v & 0x1F) + 1
        if not v >> 63:
            return 1
        if nbits > ITS_MAX_EVENTID_BITS or self._check_id(self.baser[0], id_) is None:
            return -EINVAL
        if id_ in self.devs:
            return -EEXIST          # KVM would add a second device (see the core)
        dev = _Dev(itt, nbits)
        self.devs[id_] = dev
        r = self._scan(itt, (1 << nbits) * ITS_ESZ, 0, lambda e, x: self._restore_ite(dev, e, x))
        if r < 0:
            self._free_dev(id_)
            return r
        return nxt

    def _restore_l1(self, index: int, v: int) -> int:
        if not v & ITS_L1E_VALID:
            return 1
        # KVM's start id is a 32-bit product (index 2**19 wraps to 0), as the core's
        return self._scan(v & ITS_L2_ADDR_MASK, 65536, (index * (65536 // ITS_ESZ)) & 0xFFFFFFFF, self._restore_dte)

    def _restore_devices(self) -> int:
        baser = self.baser[0]
        if not baser & GITS_BASER_VALID:
            return 0
        fn = self._restore_l1 if baser & GITS_BASER_INDIRECT else self._restore_dte
        r = self._scan(_baser_base(baser), _baser_bytes(baser), 0, fn)
        return r if r < 0 else 0

    def _restore_collections(self) -> int:
        baser = self.baser[1]
        if not baser & GITS_BASER_VALID:
            return 0
        base, size, mem = _baser_base(baser), _baser_bytes(baser), self._mem()
        r = 0
        off = 0
        while off < size:
            v = mem.read64(base + off)
            if v is None:
                r = -EFAULT
                break
            if not v >> 63:
                break
            target, icid = (v >> KVM_ITS_CTE_RDBASE_SHIFT) & 0xFFFFFFFF, v & 0xFFFF
            if target != COLLECTION_NOT_MAPPED and target >= self.gic.nr_vcpus:
                r = -EINVAL
                break
            if icid in self.colls:
                r = -EEXIST
                break
            if self._check_id(baser, icid) is None:
                r = -EINVAL
                break
            self.colls[icid] = target
            off += ITS_ESZ
        return r

    def restore_tables(self) -> int:
        """KVM_DEV_ARM_ITS_RESTORE_TABLES: 0 or a negative errno; an error
        changes nothing (the core's restore_tables says how KVM differs)."""
        had, ncoll, seq = set(self.devs), len(self.colls), self.gic._seq_counter
        made: list[int] = []
        consumed: list[tuple[int, int]] = []
        self.gic._undo = (made, consumed)
        try:
            r = self._restore_collections()
            if r == 0:
                r = self._restore_devices()
            if r < 0:
                # (undo still set: lpi_put drops the references this call
                # added without releasing an LPI that existed before it)
                for devid in sorted(set(self.devs) - had):
                    self._free_dev(devid)
        finally:
            self.gic._undo = None
        if r < 0:
            for intid in reversed(made):
                self.gic._lpis.pop(intid, None)
            for at, old in reversed(consumed):
                self._mem().write8(at, old)
            for icid in list(self.colls)[ncoll:][::-1]:
                self._free_coll(icid)
            self.gic._seq_counter = seq
        return r

    def reset(self) -> None:
        """KVM_DEV_ARM_ITS_CTRL_RESET."""
        self.baser = [self.baser[0] & ~GITS_BASER_VALID, self.baser[1] & ~GITS_BASER_VALID]
        self.cbaser = self.creadr = self.cwriter = 0
        self.enabled = 0
        self._free_all_devs()
        self._free_all_colls()

    def process_commands(self) -> None:
        """Run the queued commands now."""
        self._process()

    def command(self, dw0: int, dw1: int, dw2: int, dw3: int) -> int:
        """Run one command from its four words; KVM's internal result."""
        c = [check_int(f"dw{i}", x, 0, U64) for i, x in enumerate((dw0, dw1, dw2, dw3))]
        return self._handle(c)

    # ---- named state -------------------------------------------------------------
    def arrays(self) -> its_state.ItsArrays:
        """The state as :class:`vgic.its_state.ItsArrays`."""
        devices = []
        for devid in sorted(self.devs):
            dev = self.devs[devid]
            events = sorted(dev.ites)
            devices.append(its_state.Device(
                devid, dev.itt_addr, dev.nbits, np.array(events, dtype=np.uint32),
                np.array([dev.ites[e].lpi for e in events], dtype=np.uint32),
                np.array([dev.ites[e].icid for e in events], dtype=np.uint16),
                np.array([dev.ites[e].has_coll for e in events], dtype=np.bool_)))
        return its_state.ItsArrays(self.enabled, self.abi_rev, self.cbaser, self.cwriter, self.creadr,
                                   (self.baser[0], self.baser[1]), devices, list(self.colls.items()))

    def state(self) -> dict[str, Any]:
        """The named state (:mod:`vgic.its_state` layout)."""
        return its_state.to_dict(self.arrays())

    def load_state(self, state: Any) -> None:
        """Replace the whole state, checked first (``vgic.StateError``): the
        LPIs its ITEs map must exist in the Gic, with matching ITE counts."""
        a = its_state.from_dict(state, self.gic.nr_vcpus, self.max_ites)
        lpi = self.gic.arrays().lpi
        its_state.check_lpi_links(a, lpi["intid"], lpi["ite_count"], "its", "gic.lpi")
        self.apply_arrays(a)

    def apply_arrays(self, a: its_state.ItsArrays) -> None:
        """Write arrays into the state (no LPI reference changes), checked
        first by ``its_state.check_arrays`` as the core's are."""
        a = its_state.check_arrays(a, self.gic.nr_vcpus, self.max_ites, self.gic.nr_lpis)
        devs = {}
        total = 0
        for d in a.devices:
            dev = _Dev(d.itt_addr, d.nbits)
            for e, lpi, icid, hc in zip(d.event.tolist(), d.lpi.tolist(), d.icid.tolist(), d.has_coll.tolist()):
                dev.ites[e] = _Ite(lpi, icid, bool(hc))
            total += len(dev.ites)
            devs[d.devid] = dev
        self.devs = devs
        self.nr_ites = total
        self.colls = dict(a.collections)
        self.enabled, self.abi_rev = a.enabled, a.abi_rev
        self.cbaser, self.cwriter, self.creadr = a.cbaser, a.cwriter, a.creadr
        self.baser = [a.baser[0], a.baser[1]]


def plain_table_loop(memory: Any, offsets: Any, values: Any) -> int:
    """The save/restore benchmark's baseline (see the core): write each value
    at its offset, read them all back; the XOR of what was read."""
    from ..guestmem import check_entry_offsets
    m, off = check_entry_offsets(memory, offsets)
    val = np.asarray(values, dtype=np.uint64)
    if val.shape != off.shape:
        raise ValueError("offsets and values must be 1-D arrays of one length")
    words = [int(v) for v in val.tolist()]
    for o, v in zip(off.tolist(), words):
        m[o:o + 8] = np.frombuffer(v.to_bytes(8, "little"), dtype=np.uint8)
    acc = 0
    for o in off.tolist():
        acc ^= int.from_bytes(m[o:o + 8].tobytes(), "little")
    return acc


def stripped_table_save(memory: Any, offsets: Any, ites: Any, lpi_bitmap: Any, lpi_target: Any,
                        lpi_priority: Any, prop_offset: int) -> None:
    """The floor of SAVE_TABLES (see the core): each ITE written with `next` 1."""
    from ..guestmem import check_stripped_pair
    m, off, it, _, _, _ = check_stripped_pair(memory, offsets, ites, lpi_bitmap, lpi_target, lpi_priority,
                                              prop_offset)
    for o, (lpi, icid) in zip(off.tolist(), it.tolist()):
        v = (1 << KVM_ITS_ITE_NEXT_SHIFT) | (lpi << KVM_ITS_ITE_PINTID_SHIFT) | (icid & KVM_ITS_ITE_ICID_MASK)
        m[o:o + 8] = np.frombuffer(v.to_bytes(8, "little"), dtype=np.uint8)


def stripped_table_restore(memory: Any, offsets: Any, ites: Any, lpi_bitmap: Any, lpi_target: Any,
                           lpi_priority: Any, prop_offset: int) -> int:
    """The floor of RESTORE_TABLES (see the core): entries decoded, the LPI
    of each pINTID met first made; the number made."""
    from ..guestmem import check_stripped_pair
    m, off, it, ex, tg, pr = check_stripped_pair(memory, offsets, ites, lpi_bitmap, lpi_target, lpi_priority,
                                                 prop_offset)
    nr, made = pr.shape[0], 0
    for i, o in enumerate(off.tolist()):
        v = int.from_bytes(m[o:o + 8].tobytes(), "little")
        lpi = (v >> KVM_ITS_ITE_PINTID_SHIFT) & 0xFFFFFFFF
        k = lpi - LPI_BASE
        if not 0 <= k < nr:
            raise ValueError(f"entry {i}: pINTID {lpi} is not an LPI of the arrays ({LPI_BASE}..{LPI_BASE + nr - 1})")
        icid = v & KVM_ITS_ITE_ICID_MASK
        it[i] = (lpi, icid)
        if not (int(ex[k >> 5]) >> (k & 31)) & 1:
            ex[k >> 5] |= np.uint32(1 << (k & 31))
            tg[k] = icid
            pr[k] = int(m[int(prop_offset) + k]) & 0xFC
            made += 1
    return made


def _msi_result(r: int) -> int:
    return 1 if r == 0 else (0 if r > 0 else r)


# ---------------------------------------------------------------- MMIO handlers
def _read_ctlr(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return its_state.gits_ctlr(its.enabled, its.cwriter, its.creadr)


def _write_ctlr(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    if not its.enabled and value & GITS_CTLR_ENABLED and not (
            its.baser[0] & its.baser[1] & its.cbaser & GITS_BASER_VALID):
        return
    its.enabled = 1 if value & GITS_CTLR_ENABLED else 0
    its._process()


def _uwrite_ctlr(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
    _write_ctlr(its, vcpu, offset, intid, size, value)
    return 0


def _read_iidr(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return its_state.gits_iidr(its.abi_rev)


def _uwrite_iidr(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
    rev = (value >> GITS_IIDR_REV_SHIFT) & 0xF
    if rev >= ITS_ABI_REVISIONS:
        return -EINVAL
    its.abi_rev = rev
    return 0


def _read_typer(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return _extract(GITS_TYPER_VALUE, offset, size)


def _read_cbaser(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return _extract(its.cbaser, offset, size)


def _write_cbaser(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    if its.enabled:
        return
    its.cbaser = its_state.sanitise_cbaser(_update(its.cbaser, offset, size, value))
    its.creadr = its.cwriter = 0


def _read_cwriter(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return _extract(its.cwriter, offset, size)


def _write_cwriter(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    reg = _update(its.cwriter, offset, size, value) & GITS_CMD_OFFSET_MASK
    if reg >= its._cmdq_bytes():
        return
    its.cwriter = reg
    its._process()


def _read_creadr(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return _extract(its.creadr, offset, size)


def _uwrite_creadr(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
    reg = value & GITS_CMD_OFFSET_MASK
    if its.enabled:
        return -EBUSY
    if reg >= its._cmdq_bytes():
        return -EINVAL
    its.creadr = reg
    return 0


def _read_baser(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    idx = (offset >> 3) & 7
    return _extract(its.baser[idx], offset, size) if idx < 2 else 0


def _write_baser(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    idx = (offset >> 3) & 7
    if its.enabled or idx >= 2:
        return
    old = its.baser[idx]
    reg = its_state.sanitise_baser(_update(old, offset, size, value), idx)
    its.baser[idx] = reg
    if reg != old:
        if idx == 0:
            its._free_all_devs()
        else:
            its._free_all_colls()


_IDREGS = {GITS_PIDR4: 0x40, GITS_PIDR0: 0x92, GITS_PIDR1: 0xB4, GITS_PIDR2: 0x3B,
           GITS_CIDR0: 0x0D, GITS_CIDR0 + 4: 0xF0, GITS_CIDR0 + 8: 0x05, GITS_CIDR0 + 12: 0xB1}


def _read_idregs(its: Its, vcpu: int, offset: int, intid: int, size: int) -> int:
    return _IDREGS.get(offset, 0)


def _wi(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> None:
    return None


def _uwi(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
    return 0


def _guest_uwrite(write: Any) -> Any:
    def uwrite(its: Its, vcpu: int, offset: int, intid: int, size: int, value: int) -> int:
        write(its, vcpu, offset, intid, size, value)
        return 0
    return uwrite


#: The ITS frame's handler families (the bus reads them).
OPS: dict[str, Ops] = {
    "its_ctlr": Ops(_read_ctlr, _write_ctlr, _read_ctlr, _uwrite_ctlr),
    "its_iidr": Ops(_read_iidr, _wi, _read_iidr, _uwrite_iidr),
    "its_typer": Ops(_read_typer, _wi, _read_typer, _uwi),
    "its_cbaser": Ops(_read_cbaser, _write_cbaser, _read_cbaser, _guest_uwrite(_write_cbaser)),
    "its_cwriter": Ops(_read_cwriter, _write_cwriter, _read_cwriter, _guest_uwrite(_write_cwriter)),
    "its_creadr": Ops(_read_creadr, _wi, _read_creadr, _uwrite_creadr),
    "its_baser": Ops(_read_baser, _write_baser, _read_baser, _guest_uwrite(_write_baser)),
    "its_idregs": Ops(_read_idregs, _wi, _read_idregs, _uwi),
}
Its.ops = OPS

_NEEDED = {row.ops for f in FRAMES if f.part == "its" for row in f.regions}
if _NEEDED - set(OPS):      # pragma: no cover - a regmap/twin mismatch
    raise ImportError(f"vgic._pure.its binds no handlers for ops {sorted(_NEEDED - set(OPS))}")
