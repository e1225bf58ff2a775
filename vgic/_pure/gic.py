"""Pure-Python twin of ``vgic._core.gic``: the vGICv3 distributor and
redistributors' state, and the handler families of their frames.

Same interface as ``vgic/_core/gic.pyi``.  The state is a
:class:`vgic._pure.irq.VgicIrq` per interrupt, laid out like KVM's
``struct vgic_irq``, plus the scalar registers of ``struct vgic_dist`` /
``struct vgic_cpu``; the handler modules of this package
(:mod:`.vgic_irq_ops`, :mod:`.vgic_dist`, :mod:`.vgic_redist`) read and
write it directly.  :data:`OPS` binds every ops name of the GICD, GICR_RD
and GICR_SGI rows of :data:`vgic.regmap.FRAMES`; :class:`vgic._pure.mmio.Bus`
dispatches to them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import gic_state, topology
from ..guestmem import GuestMem, check_memory
from ..ich import U32, U64, check_int
from ..regmap import (
    FRAMES,
    INITIAL_PENDBASER,
    INITIAL_PROPBASER,
    KVM_VGIC_IMP_REV_LATEST,
    LPI_BASE,
    NR_LPIS,
    NR_PRIVATE_IRQS,
    NR_SGIS,
)
from . import vgic_dist as dist
from . import vgic_irq_ops as irq_ops
from . import vgic_redist as redist
from .irq import VgicIrq
from .mmio import Ops


def _guest_ops(read: Callable[..., int], write: Callable[..., None]) -> Ops:
    """A family whose userspace accesses behave as the guest's (no uaccess_* in KVM)."""
    return Ops(read, write, read, irq_ops.uaccess_via_guest(write))


#: Every ops name of the vGICv3's frames bound to its handlers.
OPS: dict[str, Ops] = {
    "raz_wi": Ops(irq_ops.read_raz, irq_ops.write_wi, irq_ops.read_raz, irq_ops.uaccess_write_wi),
    "rao_wi": Ops(irq_ops.read_rao, irq_ops.write_wi, irq_ops.read_rao, irq_ops.uaccess_write_wi),
    "idregs": Ops(irq_ops.read_idregs, irq_ops.write_wi, irq_ops.read_idregs,
                  irq_ops.uaccess_write_wi),
    # GICD_CTLR/TYPER/IIDR/TYPER2: userspace may restore CTLR and IIDR (kvm-facts §1.3).
    "v3_misc": Ops(dist.read_v3_misc, dist.write_v3_misc, dist.read_v3_misc,
                   dist.uaccess_write_v3_misc),
    "group": _guest_ops(irq_ops.read_group, irq_ops.write_group),
    "senable": _guest_ops(irq_ops.read_enable, irq_ops.write_senable),
    "cenable": _guest_ops(irq_ops.read_enable, irq_ops.write_cenable),
    # Userspace sees and assigns the raw latch (kvm-facts §2).
    "spending": Ops(irq_ops.read_pending, irq_ops.write_spending,
                    irq_ops.uaccess_read_pending, irq_ops.uaccess_write_spending),
    # ICPENDR is RAZ/WI to userspace: ISPENDR alone carries the latch (kvm-facts §2).
    "cpending": Ops(irq_ops.read_pending, irq_ops.write_cpending,
                    irq_ops.read_raz, irq_ops.uaccess_write_wi),
    "sactive": Ops(irq_ops.read_active, irq_ops.write_sactive,
                   irq_ops.read_active, irq_ops.uaccess_write_sactive),
    "cactive": Ops(irq_ops.read_active, irq_ops.write_cactive,
                   irq_ops.read_active, irq_ops.uaccess_write_cactive),
    "priority": _guest_ops(irq_ops.read_priority, irq_ops.write_priority),
    "config": _guest_ops(irq_ops.read_config, irq_ops.write_config),
    "irouter": _guest_ops(dist.read_irouter, dist.write_irouter),
    # Userspace takes the guest's path: restoring EnableLPIs loads the pending table.
    "v3r_ctlr": _guest_ops(redist.read_v3r_ctlr, redist.write_v3r_ctlr),
    "v3r_iidr": Ops(redist.read_v3r_iidr, irq_ops.write_wi, redist.read_v3r_iidr,
                    irq_ops.uaccess_write_wi),
    # GICR_TYPER is read-only to the guest and to userspace (kvm-facts §1.5).
    "v3r_typer": Ops(redist.read_v3r_typer, irq_ops.write_wi, redist.read_v3r_typer,
                     irq_ops.uaccess_write_wi),
    "propbase": _guest_ops(redist.read_propbase, redist.write_propbase),
    "pendbase": _guest_ops(redist.read_pendbase, redist.write_pendbase),
    "invlpi": _guest_ops(irq_ops.read_raz, redist.write_invlpi),
    "invall": _guest_ops(irq_ops.read_raz, redist.write_invall),
}

_NEEDED = {row.ops for f in FRAMES if f.part == "vgic_v3" for row in f.regions}
if _NEEDED - set(OPS):      # pragma: no cover - a regmap/twin mismatch
    raise ImportError(f"vgic._pure.gic binds no handlers for ops {sorted(_NEEDED - set(OPS))}")

_FIELDS = ("enabled", "pending_latch", "line_level", "active", "group", "config_edge")


_I64 = (-(1 << 63), (1 << 63) - 1)


class Gic:
    """Distributor and redistributor state of one VM (``nr_vcpus``
    redistributors, ``nr_irqs`` INTIDs below the LPIs, ``mpidrs[i]`` the
    MPIDR_EL1 of vCPU *i*).  The twin of ``vgic._core.gic.Gic``."""

    __slots__ = (
        "_nr_vcpus", "_nr_irqs", "_mpidrs", "_private", "_spis", "_lpis", "_nr_lpis", "_ap_lists", "_mem",
        "_undo",
        "_dist_enabled", "_implementation_rev", "_propbaser", "_pendbaser", "_gicr_ctlr",
        "_seq_counter",
        "_host_active",
        "_input_level",
        "_lpi_orphans",
    )

    #: The handler families of this part's frames (the bus reads them).
    ops = OPS

    def __init__(self, nr_vcpus: int, nr_irqs: int, mpidrs: Any, lpis: bool = False) -> None:
        self._nr_vcpus = topology.check_nr_vcpus(nr_vcpus)
        self._nr_irqs = topology.check_nr_irqs(nr_irqs)
        mp = np.array(mpidrs, dtype=np.uint64).reshape(-1)
        if mp.shape[0] != self._nr_vcpus:
            raise ValueError(f"{mp.shape[0]} MPIDRs given for {self._nr_vcpus} vCPUs")
        # IROUTER resolution (KVM's kvm_mpidr_to_vcpu).
        self._mpidrs = topology.MpidrIndex(mp.tolist())
        # Reset state (kvm-facts §1.6, §1.3, §5.6).
        # Private: SGIs enabled and edge, PPIs disabled and level; Group 1; priority 0.
        self._private: list[list[VgicIrq]] = [
            [VgicIrq(intid, enabled=intid < NR_SGIS, config_edge=intid < NR_SGIS, target_vcpu=v)
             for intid in range(NR_PRIVATE_IRQS)]
            for v in range(self._nr_vcpus)
        ]
        # SPIs: disabled, edge (KVM's zero config), Group 1, routed to affinity
        # 0 and targeting vCPU 0 as KVM's vgic_init leaves them.
        self._spis: list[VgicIrq] = [VgicIrq(intid, target_vcpu=0)
                                     for intid in range(NR_PRIVATE_IRQS, self._nr_irqs)]
        # LPIs that exist, by INTID (KVM's lpi_xa); with an ITS any of the
        # NR_LPIS INTIDs may.
        self._lpis: dict[int, VgicIrq] = {}
        self._nr_lpis = NR_LPIS if lpis else 0
        #: Each vCPU's ap_list (kept by vgic._pure.aplist; emptied by the LPI paths too).
        self._ap_lists: list[list[VgicIrq]] = [[] for _ in range(self._nr_vcpus)]
        self._mem = GuestMem()
        #: While a restore runs: what lpi_add did (made LPIs, consumed bytes), to undo it.
        self._undo: tuple[list[int], list[tuple[int, int]]] | None = None
        self._dist_enabled = 0
        self._implementation_rev = KVM_VGIC_IMP_REV_LATEST
        self._propbaser = INITIAL_PROPBASER if lpis else 0     # creating the ITS sets it
        self._pendbaser: list[int] = [INITIAL_PENDBASER] * self._nr_vcpus
        self._gicr_ctlr: list[int] = [0] * self._nr_vcpus
        self._seq_counter = 0           # the last deliverability stamp handed out
        # The host PPIs' active bits of the physical CPU under each vCPU, and
        # the level source of HW-mapped interrupts (gicstate.pxd's
        # host_active and input_level).
        self._host_active: list[int] = [0] * self._nr_vcpus
        self._input_level: Callable[[int, int], bool] | None = None
        self._lpi_orphans = False       # an LPI may exist that nothing holds (gicstate.pxd)

    # ---- geometry ---------------------------------------------------------
    @property
    def nr_irqs(self) -> int:
        """Number of INTIDs (32 private + SPIs)."""
        return self._nr_irqs

    @property
    def seq_counter(self) -> int:
        """Moves whenever an interrupt becomes deliverable or the guest
        enables the distributor (where KVM kicks vCPUs)."""
        return self._seq_counter

    @property
    def nr_intids(self) -> int:
        """The INTID bound of this part's per-IRQ regions (the bus's check)."""
        return self._nr_irqs

    @property
    def nr_vcpus(self) -> int:
        """Number of vCPUs, hence of redistributors."""
        return self._nr_vcpus

    @property
    def nr_lpis(self) -> int:
        """LPI INTIDs this state can hold: NR_LPIS with an ITS, else 0."""
        return self._nr_lpis

    def lpis(self) -> list[int]:
        """The LPIs that exist, in INTID order."""
        return sorted(self._lpis)

    def clear_queued(self) -> None:
        """Empty every ap_list (a new ApLists starts empty)."""
        for irq in self._all_irqs():
            irq.ap_vcpu = -1
            irq.in_lr = False
        for row in self._ap_lists:
            row.clear()

    def save_pending_tables(self) -> int:
        """KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES (see the core); 0 or -EFAULT."""
        from . import lpi
        return lpi.lpi_save_pending_tables(self)

    def attach_memory(self, memory: Any, gpa: int) -> None:
        """Guest RAM for the LPI property and pending tables (see the core)."""
        arr = check_memory(memory)
        base = check_int("gpa", gpa, 0, U64)
        if base + arr.shape[0] > 1 << 64:
            raise ValueError(f"memory at {base:#x} wraps the 64-bit address space")
        self._mem = GuestMem(arr, base)

    def _all_irqs(self) -> list[VgicIrq]:
        return [irq for row in self._private for irq in row] + self._spis + list(self._lpis.values())

    def _valid(self, intid: int) -> bool:
        return intid < self._nr_irqs or intid in self._lpis

    # ---- LPI lifetime (the rule of vgic._core.gicstate) ------------------------
    def lpi_release(self, intid: int) -> bool:
        """Free an LPI nothing holds (no ITE, no ap_list, not pending and
        enabled towards a vCPU); True if freed."""
        irq = self._lpis.get(intid)
        if irq is None or irq.ite_count or irq.ap_vcpu >= 0:
            return False
        # Unqueued, the oracle names its target if active, or if pending and
        # enabled while the distributor is.
        if self._lpi_deliverable(irq):
            # An orphan: KVM holds it on its target's ap_list, which drops it
            # at that vCPU's next exit unless deliverable (lpi_sweep_orphans).
            self._lpi_orphans = True
            return False
        del self._lpis[intid]
        return True

    def _lpi_deliverable(self, irq: VgicIrq) -> bool:
        # Unqueued, the oracle names its target if active, or if pending and
        # enabled while the distributor is.
        return irq.target_vcpu >= 0 and (irq.active or (irq.enabled and irq.pending() and bool(self._dist_enabled)))

    def lpi_sweep_orphans(self, vcpu: int) -> None:
        """At vCPU ``vcpu``'s prune: free the orphan LPIs (no ITE, on no
        ap_list) whose target is ``vcpu`` (or no vCPU) and that are no longer
        deliverable, as KVM's vgic_prune_ap_list() drops them."""
        if not self._lpi_orphans:
            return
        left = False
        for intid, irq in sorted(self._lpis.items()):
            if irq.ite_count or irq.ap_vcpu >= 0:
                continue
            t = irq.target_vcpu
            if not self._lpi_deliverable(irq) and (t == vcpu or not 0 <= t < self._nr_vcpus):
                del self._lpis[intid]
            else:
                left = True
        self._lpi_orphans = left

    @property
    def ops_names(self) -> list[str]:
        """The handler families this part binds."""
        return list(OPS)

    def __repr__(self) -> str:
        return f"<vgic._pure.gic.Gic nr_vcpus={self._nr_vcpus} nr_irqs={self._nr_irqs}>"

    # ---- state access used by the handlers ---------------------------------
    def _irq(self, vcpu: int, intid: int) -> VgicIrq:
        """KVM's ``vgic_get_irq``: private INTIDs are per vCPU, SPIs VM-wide."""
        if intid < NR_PRIVATE_IRQS:
            return self._private[vcpu][intid]
        if intid >= LPI_BASE:
            return self._lpis[intid]
        return self._spis[intid - NR_PRIVATE_IRQS]

    def _irqs(self, vcpu: int, intid: int, count: int) -> list[VgicIrq]:
        """The records of INTIDs ``intid .. intid+count-1`` (stopping at
        ``nr_irqs``).  A register never spans private and shared INTIDs."""
        if intid < NR_PRIVATE_IRQS:
            return self._private[vcpu][intid:intid + count]
        first = intid - NR_PRIVATE_IRQS
        return self._spis[first:first + count]

    # ---- HW-mapped interrupts --------------------------------------------
    def _private_irq(self, vcpu: Any, intid: Any, lo: int) -> VgicIrq:
        return self._private[self._vcpu(vcpu)][check_int("intid", intid, lo, NR_PRIVATE_IRQS - 1)]

    def map_phys_irq(self, vcpu: Any, intid: Any, pintid: Any) -> None:
        """kvm_vgic_map_phys_irq() for private INTID ``intid`` (16..31)."""
        irq = self._private_irq(vcpu, intid, NR_SGIS)
        irq.hwintid = check_int("pintid", pintid, 0, 31)
        irq.hw = True

    def unmap_phys_irq(self, vcpu: Any, intid: Any) -> None:
        """kvm_vgic_unmap_phys_irq()."""
        irq = self._private_irq(vcpu, intid, NR_SGIS)
        irq.hw = False
        irq.hwintid = 0

    def phys_irq(self, vcpu: Any, intid: Any) -> int:
        """The host PPI ``intid`` of ``vcpu`` is mapped to, or -1."""
        irq = self._private_irq(vcpu, intid, 0)
        return irq.hwintid if irq.hw else -1

    def map_is_active(self, vcpu: Any, intid: Any) -> bool:
        """kvm_vgic_map_is_active(): mapped and (virtually) active."""
        irq = self._private_irq(vcpu, intid, 0)
        return irq.hw and irq.active

    def host_active(self, vcpu: Any) -> int:
        """The active bits of the host PPIs under ``vcpu``."""
        return self._host_active[self._vcpu(vcpu)]

    def set_host_active(self, vcpu: Any, mask: Any) -> None:
        """Set those bits (irq_set_irqchip_state(IRQCHIP_STATE_ACTIVE))."""
        self._host_active[self._vcpu(vcpu)] = check_int("mask", mask, 0, U32)

    def host_deactivate(self, vcpu: Any, pintid: Any) -> None:
        """A guest deactivation through an LR with HW = 1."""
        v = self._vcpu(vcpu)
        p = check_int("pintid", pintid, 0, 1023)
        if p < 32:
            self._host_active[v] &= ~(1 << p)

    def _set_phys_active(self, irq: VgicIrq, active: bool) -> None:
        """vgic_irq_set_phys_active() of a mapped private interrupt."""
        v = irq.target_vcpu
        if irq.hwintid < 32:
            if active:
                self._host_active[v] |= 1 << irq.hwintid
            else:
                self._host_active[v] &= ~(1 << irq.hwintid)

    def _phys_level(self, irq: VgicIrq) -> bool:
        """vgic_get_phys_line_level() of a mapped private interrupt."""
        fn = self._input_level
        return bool(fn(irq.target_vcpu, irq.intid)) if fn is not None else False

    def _vcpu_by_affinity(self, route: int) -> int:
        """The vCPU whose MPIDR affinity equals ``route``, or -1 (kvm-facts §1.4)."""
        return self._mpidrs.vcpu(route)

    def mpidr_to_vcpu(self, mpidr: int) -> int:
        """The vCPU whose MPIDR affinity equals ``mpidr``'s, or -1."""
        return self._mpidrs.vcpu(check_int("mpidr", mpidr, 0, U64))

    def _vcpu(self, vcpu: Any) -> int:
        v = check_int("vcpu", vcpu, *_I64)
        if not 0 <= v < self._nr_vcpus:
            raise ValueError(f"vcpu {v} out of range: the VM has {self._nr_vcpus} vCPUs")
        return v

    def _line_args(self, vcpu: Any, intid: Any) -> tuple[int, int]:
        v = self._vcpu(vcpu)
        i = check_int("intid", intid, 0, U32)
        if i % 32:
            raise ValueError(f"intid {i} is not a multiple of 32")
        return v, i

    def _checked_irq(self, vcpu: Any, intid: Any) -> VgicIrq:
        # The vCPU matters (and is checked) only for a private INTID.
        i = check_int("intid", intid, *_I64)
        if not 0 <= i <= U32 or not self._valid(i):
            if i >= LPI_BASE:
                raise ValueError(f"intid {i} is not an LPI that exists")
            raise ValueError(f"intid {i} is not below nr_irqs {self._nr_irqs}")
        return self._irq(self._vcpu(vcpu) if i < NR_PRIVATE_IRQS else 0, i)

    # ---- device-attribute access -------------------------------------------
    def line_level_read(self, vcpu: int, intid: int) -> int:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO read of INTIDs ``intid..intid+31``.

        A bit is set only for a level-triggered INTID whose line is high;
        SGIs (no line) and INTIDs ``>= nr_irqs`` read 0 (kvm-facts §6).
        """
        vcpu, intid = self._line_args(vcpu, intid)
        value = 0
        for i in range(32):
            n = intid + i
            if n < NR_SGIS or n >= self._nr_irqs:
                continue
            irq = self._irq(vcpu, n)
            if not irq.config_edge and irq.line_level:
                value |= 1 << i
        return value

    def line_level_write(self, vcpu: int, intid: int, value: int) -> None:
        """KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO write of INTIDs ``intid..intid+31``.

        Sets ``line_level`` whatever the trigger mode, so a restore does not
        depend on ICFGR being restored first (kvm-facts §6).
        """
        vcpu, intid = self._line_args(vcpu, intid)
        value = check_int("value", value, 0, U32)
        rows = [(self._irq(vcpu, intid + i), bool((value >> i) & 1)) for i in range(32)
                if NR_SGIS <= intid + i < self._nr_irqs]

        def change() -> None:
            for irq, level in rows:
                irq.line_level = level
        irq_ops.stamped(self, [irq for irq, _ in rows], change)

    # ---- interrupt lines ----------------------------------------------------
    def set_irq_level(self, vcpu: int, intid: int, level: bool) -> None:
        """kvm_vgic_inject_irq for a validated SPI (``vcpu`` ignored) or PPI.

        A level-triggered line follows ``level``; an edge-triggered one
        latches pending on a rising report and ignores 0 (kvm-facts §3.3).
        """
        irq = self._checked_irq(vcpu, intid)

        def change() -> None:
            if irq.config_edge:
                if level:
                    irq.pending_latch = True
            elif irq.line_level != bool(level):
                irq.line_level = bool(level)
        irq_ops.stamped(self, [irq], change)

    def set_irq_level_batch(self, vcpus: Any, intids: Any, levels: Any) -> None:
        """set_irq_level for each (vcpu, intid, level), all checked first."""
        v = np.asarray(vcpus, dtype=np.int64)
        n = np.asarray(intids, dtype=np.int64)
        lv = np.asarray(levels, dtype=np.uint8)
        if v.ndim != 1 or n.shape != v.shape or lv.shape != v.shape:
            raise ValueError("vcpus, intids and levels must be 1-D arrays of one length")
        rows = list(zip(v.tolist(), n.tolist(), lv.tolist()))
        for k, (vcpu, intid, _) in enumerate(rows):
            if not 0 <= intid < self._nr_irqs:
                raise ValueError(f"intids[{k}] = {intid} is not below nr_irqs {self._nr_irqs}")
            if intid < NR_PRIVATE_IRQS and not 0 <= vcpu < self._nr_vcpus:
                raise ValueError(f"vcpus[{k}] = {vcpu} is out of range: the VM has {self._nr_vcpus} vCPUs")
        for vcpu, intid, level in rows:
            self.set_irq_level(vcpu if intid < NR_PRIVATE_IRQS else 0, intid, bool(level))

    # ---- the KVM side's access -------------------------------------------------
    def set_irq_bit(self, vcpu: int, intid: int, field: int, value: bool) -> None:
        """Set one single-bit field of an INTID's state: ``field`` 0 enabled,
        1 pending_latch, 2 line_level, 3 active, 4 group, 5 edge (the order
        of :meth:`irq_state`)."""
        irq = self._checked_irq(vcpu, intid)
        field = check_int("field", field, 0, len(_FIELDS) - 1)
        irq_ops.stamped(self, [irq], lambda: setattr(
            irq, _FIELDS[field], int(bool(value)) if field == 4 else bool(value)))

    def irq_scan(self, vcpu: int) -> list[int]:
        """INTIDs that may need a list register: vCPU ``vcpu``'s private
        INTIDs, then every SPI, then every LPI, that are active or enabled
        and pending."""
        irqs = self._private[self._vcpu(vcpu)] + self._spis + [self._lpis[i] for i in sorted(self._lpis)]
        return [irq.intid for irq in irqs if irq.active or (irq.enabled and irq.pending())]

    @property
    def dist_enabled(self) -> bool:
        """GICD_CTLR.EnableGrp1: KVM's dist->enabled."""
        return bool(self._dist_enabled)

    # ---- introspection ------------------------------------------------------
    def irq_state(self, vcpu: int, intid: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """``(enabled, pending_latch, line_level, active, group, edge, priority,
        route, target)`` of one INTID; ``route``/``target`` are 0/-1 for
        private interrupts."""
        irq = self._checked_irq(vcpu, intid)
        private = irq.intid < NR_PRIVATE_IRQS
        return (
            int(irq.enabled), int(irq.pending_latch), int(irq.line_level),
            int(irq.active), int(irq.group), int(irq.config_edge), irq.priority,
            0 if private or irq.intid >= LPI_BASE else irq.mpidr,
            -1 if private else irq.target_vcpu,
        )

    # ---- named state --------------------------------------------------------
    _ARRAY_FIELDS = (("enabled", "enabled"), ("pending_latch", "pending_latch"),
                     ("line_level", "line_level"), ("active", "active"), ("group", "group"),
                     ("edge", "config_edge"), ("priority", "priority"), ("seq", "seq"))

    @classmethod
    def _columns(cls, irqs: list[VgicIrq]) -> dict[str, np.ndarray]:
        dtypes = {"group": np.uint8, "priority": np.uint8, "seq": np.uint64}
        return {key: np.array([getattr(irq, attr) for irq in irqs], dtype=dtypes.get(key, np.bool_))
                for key, attr in cls._ARRAY_FIELDS}

    def arrays(self) -> gic_state.GicArrays:
        """The state as :class:`vgic.gic_state.GicArrays`."""
        spi = self._columns(self._spis)
        spi["mpidr"] = np.array([irq.mpidr for irq in self._spis], dtype=np.uint32)
        spi["target_vcpu"] = np.array([irq.target_vcpu for irq in self._spis], dtype=np.int32)
        rows = [self._columns(p) for p in self._private]
        private = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        lpis = [self._lpis[i] for i in sorted(self._lpis)]
        lpi = {name: np.array([getattr(irq, name) for irq in lpis], dtype=gic_state.empty_lpis()[name].dtype)
               for name in gic_state.LPI_FIELDS}
        return gic_state.GicArrays(int(self._dist_enabled), int(self._implementation_rev),
                                   int(self._propbaser), int(self._seq_counter),
                                   np.array(self._gicr_ctlr, dtype=np.uint32),
                                   np.array(self._pendbaser, dtype=np.uint64), spi, private, lpi)

    def state(self) -> dict[str, Any]:
        """The named state (:mod:`vgic.gic_state` layout)."""
        return gic_state.to_dict(self.arrays())

    def load_state(self, state: Any) -> None:
        """Replace the whole state by ``state``, checked first (a bad field
        raises ``vgic.gic_state.StateError`` and changes nothing)."""
        self.apply_arrays(gic_state.from_dict(state, self._nr_vcpus, self._nr_irqs, self._mpidrs,
                                              nr_lpis=self._nr_lpis))

    def apply_arrays(self, a: gic_state.GicArrays) -> None:
        """Write checked :class:`vgic.gic_state.GicArrays` into the state."""
        # Every value is read out before any record changes.
        spi = {key: a.spi[key].tolist() for key, _ in self._ARRAY_FIELDS}
        mpidr, target = a.spi["mpidr"].tolist(), a.spi["target_vcpu"].tolist()
        private = [{key: a.private[key][v].tolist() for key, _ in self._ARRAY_FIELDS}
                   for v in range(self._nr_vcpus)]
        if (len(mpidr) != len(self._spis) or any(len(col) != len(self._spis) for col in spi.values())
                or any(len(col) != NR_PRIVATE_IRQS for p in private for col in p.values())
                or len(a.gicr_ctlr) != self._nr_vcpus or len(a.pendbaser) != self._nr_vcpus):
            raise ValueError("the arrays do not match this Gic's geometry")
        if a.lpi["intid"].size and not self._nr_lpis:
            raise ValueError("this Gic has no LPIs")
        lpi_cols = {name: a.lpi[name].tolist() for name in gic_state.LPI_FIELDS}

        def assign(irqs: list[VgicIrq], cols: dict[str, list]) -> None:
            for i, irq in enumerate(irqs):
                for key, attr in self._ARRAY_FIELDS:
                    value = cols[key][i]
                    setattr(irq, attr, int(value) if key in ("group", "priority", "seq") else bool(value))

        assign(self._spis, spi)
        for irq, m, t in zip(self._spis, mpidr, target):
            irq.mpidr, irq.target_vcpu = int(m), int(t)
        for v, cols in enumerate(private):
            assign(self._private[v], cols)
        self._lpis = {}
        self._lpi_orphans = bool(np.any(np.asarray(a.lpi["ite_count"]) == 0))
        for k, intid in enumerate(lpi_cols["intid"]):
            irq = VgicIrq(int(intid))
            for name in gic_state.LPI_FIELDS[1:]:
                value = lpi_cols[name][k]
                setattr(irq, name, bool(value) if name in gic_state.FLAG_FIELDS else int(value))
            self._lpis[int(intid)] = irq
        self._dist_enabled = int(a.dist_enabled)
        self._implementation_rev = int(a.implementation_rev)
        self._propbaser = int(a.propbaser)
        self._seq_counter = int(a.seq_counter)
        self._gicr_ctlr = [int(x) for x in a.gicr_ctlr]
        self._pendbaser = [int(x) for x in a.pendbaser]
