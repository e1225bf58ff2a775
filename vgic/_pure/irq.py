"""The per-interrupt state record: the twin of KVM's ``struct vgic_irq``.

Only the fields this model needs are kept (kvm-facts §3.1): an LPI's
references are its ITE count (see ``vgic._core.gicstate`` for when an LPI
lives), the hardware mapping of private INTIDs (``hw``, ``hwintid``), no
GICv2 source bits.  The ap_list linkage is
``ap_vcpu`` (KVM's ``irq->vcpu``) plus ``in_lr``, kept by
:mod:`vgic._pure.aplist`.
"""
from __future__ import annotations


class VgicIrq:
    """State of one INTID, as ``struct vgic_irq`` holds it (kvm-facts §3.1).

    ``config_edge`` is True for edge-triggered interrupts (KVM's
    ``VGIC_CONFIG_EDGE``, which is the enum value 0, so a zero-initialised
    SPI is edge-triggered).  ``mpidr`` is the IROUTER affinity (SPIs only,
    Aff2.Aff1.Aff0) and ``target_vcpu`` the vCPU index it resolves to, or
    -1 when no vCPU has that affinity (KVM's NULL ``target_vcpu``).
    """

    __slots__ = (
        "intid",
        "enabled",
        "pending_latch",
        "line_level",
        "active",
        "group",
        "config_edge",
        "priority",
        "mpidr",
        "target_vcpu",
        "ap_vcpu",
        "in_lr",
        "seq",
        "ite_count",
        "hw",
        "hwintid",
    )

    def __init__(self, intid: int, *, enabled: bool = False, config_edge: bool = True,
                 group: int = 1, priority: int = 0, mpidr: int = 0,
                 target_vcpu: int = -1) -> None:
        self.intid = intid
        self.enabled = enabled
        self.pending_latch = False
        self.line_level = False
        self.active = False
        self.group = group
        self.config_edge = config_edge
        self.priority = priority
        self.mpidr = mpidr
        self.target_vcpu = target_vcpu
        self.ap_vcpu = -1           # the vCPU whose ap_list holds it (irq->vcpu)
        self.in_lr = False          # held in a list register between flush and fold
        self.seq = 0                # when it last became deliverable (stamp order)
        self.ite_count = 0          # LPIs: the ITEs mapping it
        self.hw = False             # forwarded from a physical interrupt (private INTIDs)
        self.hwintid = 0            # that interrupt's physical INTID

    def deliverable(self) -> bool:
        """What KVM's oracle could queue: active, or enabled and pending."""
        return bool(self.active or (self.enabled and self.pending()))

    def pending(self) -> bool:
        """KVM's ``irq_is_pending``: the latch, or the input line of a
        level-triggered interrupt (kvm-facts §3.2)."""
        return self.pending_latch or (not self.config_edge and self.line_level)

    def __repr__(self) -> str:
        return (
            f"VgicIrq(intid={self.intid}, enabled={int(self.enabled)}, "
            f"pending_latch={int(self.pending_latch)}, line_level={int(self.line_level)}, "
            f"active={int(self.active)}, group={self.group}, "
            f"{'edge' if self.config_edge else 'level'}, priority={self.priority:#x}, "
            f"mpidr={self.mpidr:#x}, target_vcpu={self.target_vcpu})"
        )
