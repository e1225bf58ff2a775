"""Pure-Python twin of ``vgic._core.lr``: the hyp save/restore of the GICv3
virtual CPU interface in both LR storage orders (kvm-facts §4.3; Linux
arch/arm64/kvm/hyp/vgic-v3-sr.c, v6.19)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vgic import ich

MAX_LRS = ich.MAX_LRS


def _elrsr(lrs: Any, nr_lrs: int) -> int:
    # An LR is empty when State is 00 and no EOI maintenance is pending.
    mask = 0
    for n in range(nr_lrs):
        lr = int(lrs[n])
        if not lr & ich.LR_STATE_MASK and (lr & ich.LR_HW or not lr & ich.LR_EOI):
            mask |= 1 << n
    return mask


def _eisr(lrs: Any, nr_lrs: int) -> int:
    mask = 0
    for n in range(nr_lrs):
        if int(lrs[n]) & (ich.LR_STATE_MASK | ich.LR_HW | ich.LR_EOI) == ich.LR_EOI:
            mask |= 1 << n
    return mask


class HypIf:
    """The hyp save/restore of every vCPU of a VM over its ``VCPU_IF`` records."""

    def __init__(self, records: np.ndarray, nr_lrs: int, pri_bits: int, pre_bits: int, reverse: bool) -> None:
        records = ich.check_records(records)
        if records.shape[0] == 0:
            raise ValueError("records must hold at least one vCPU")
        self._nr_lrs, self._pri_bits, self._pre_bits = ich.check_geometry(nr_lrs, pri_bits, pre_bits)
        self._records = records
        self._nr_aprs = ich.nr_aprs(self._pre_bits)
        self._reverse = bool(reverse)

    nr_lrs = property(lambda self: self._nr_lrs)
    nr_aprs = property(lambda self: self._nr_aprs)
    reverse = property(lambda self: self._reverse)
    records = property(lambda self: self._records)

    def _at(self, i: Any) -> Any:
        return self._records[ich.check_int("vcpu", i, 0, self._records.shape[0] - 1)]

    def slot(self, n: int) -> int:
        """The saved slot that holds ICH_LR<n>_EL2 in this storage order."""
        lr = ich.check_int("LR", n, 0, MAX_LRS - 1)
        return MAX_LRS - 1 - lr if self._reverse else lr

    def _used(self, r: Any) -> int:
        return min(int(r["used_lrs"]), self._nr_lrs)

    def save_state(self, i: int) -> None:
        """__vgic_v3_save_state for vCPU ``i`` (every exit)."""
        r = self._at(i)
        used = self._used(r)
        if used:
            elrsr = _elrsr(r["ich_lr"], self._nr_lrs)
            for n in range(used):
                slot = self.slot(n)
                if elrsr & (1 << n):
                    # Empty in hardware: keep KVM's copy, minus its State.
                    r["vgic_lr"][slot] = int(r["vgic_lr"][slot]) & ~ich.LR_STATE_MASK
                else:
                    r["vgic_lr"][slot] = r["ich_lr"][n]
                r["ich_lr"][n] = 0
        r["vgic_vmcr"] = r["ich_vmcr"]
        hcr = int(r["vgic_hcr"])
        if hcr & ich.HCR_LRENPIE:
            r["vgic_hcr"] = (hcr & ~ich.HCR_EOICOUNT_MASK) | (int(r["ich_hcr"]) & ich.HCR_EOICOUNT_MASK)
        r["ich_hcr"] = 0

    def restore_state(self, i: int) -> None:
        """__vgic_v3_restore_state for vCPU ``i`` (every entry)."""
        r = self._at(i)
        r["ich_hcr"] = r["vgic_hcr"]
        for n in range(self._used(r)):
            r["ich_lr"][n] = r["vgic_lr"][self.slot(n)]

    def save_aprs(self, i: int) -> None:
        """vcpu_put: save the active-priority registers the PREbits imply."""
        r = self._at(i)
        for k in range(self._nr_aprs):
            r["vgic_ap0r"][k] = r["ich_ap0r"][k]
            r["vgic_ap1r"][k] = r["ich_ap1r"][k]

    def restore_vmcr_aprs(self, i: int) -> None:
        """vcpu_load: restore ICH_VMCR_EL2 and the active-priority registers."""
        r = self._at(i)
        # The hardware stores what its fields can hold (IHI 0069 §12.4.10).
        r["ich_vmcr"] = ich.stored_vmcr(int(r["vgic_vmcr"]), self._pri_bits, self._pre_bits)
        for k in range(self._nr_aprs):
            r["ich_ap0r"][k] = r["vgic_ap0r"][k]
            r["ich_ap1r"][k] = r["vgic_ap1r"][k]

    def elrsr(self, i: int) -> int:
        """ICH_ELRSR_EL2 of vCPU ``i``'s modelled hardware."""
        return _elrsr(self._at(i)["ich_lr"], self._nr_lrs)

    def eisr(self, i: int) -> int:
        """ICH_EISR_EL2 of vCPU ``i``'s modelled hardware."""
        return _eisr(self._at(i)["ich_lr"], self._nr_lrs)

    def _indices(self, idx: Any) -> list[int]:
        if idx is None:
            return list(range(self._records.shape[0]))
        return ich.vcpu_indices(idx, self._records.shape[0]).tolist()

    def save_state_batch(self, idx: Any = None) -> None:
        """save_state for every vCPU, or for the vCPU indices in ``idx``."""
        for i in self._indices(idx):
            self.save_state(i)

    def restore_state_batch(self, idx: Any = None) -> None:
        """restore_state for every vCPU, or for the indices in ``idx``."""
        for i in self._indices(idx):
            self.restore_state(i)

    def save_restore_batch(self, idx: Any = None) -> None:
        """save_state then restore_state of each vCPU in one pass."""
        for i in self._indices(idx):
            self.save_state(i)
            self.restore_state(i)

    def plain_copy_batch(self) -> None:
        """The copies of save_restore_batch in a plain loop (the benchmarks' baseline)."""
        for i in range(self._records.shape[0]):
            r = self._records[i]
            used = min(int(r["used_lrs"]), self._nr_lrs)
            r["vgic_lr"][:used] = r["ich_lr"][:used]
            r["ich_lr"][:used] = 0
            r["vgic_vmcr"] = r["ich_vmcr"]
            r["ich_hcr"] = r["vgic_hcr"]
            r["ich_lr"][:used] = r["vgic_lr"][:used]

    def load_batch(self, idx: Any = None) -> None:
        """restore_vmcr_aprs for the vCPU indices in ``idx``."""
        for i in self._indices(idx):
            self.restore_vmcr_aprs(i)

    def put_batch(self, idx: Any = None) -> None:
        """save_aprs for the vCPU indices in ``idx``."""
        for i in self._indices(idx):
            self.save_aprs(i)


def _fields_array(fields: Any) -> np.ndarray:
    # The real array (a subclass cannot fake its dtype), flattened.
    arr = np.asarray(fields) if isinstance(fields, np.ndarray) else None
    if arr is None or arr.dtype != ich.LR_FIELDS:
        raise TypeError("fields must be a numpy array of vgic.ich.LR_FIELDS, not "
                        f"{type(fields).__name__} {'' if arr is None else arr.dtype}")
    return np.ascontiguousarray(arr).reshape(-1)


def lr_encode_batch(fields: np.ndarray) -> np.ndarray:
    """ICH_LR<n>_EL2 values from :data:`vgic.ich.LR_FIELDS` records, one at a
    time with :func:`vgic.ich.lr_value` (IHI 0069 §12.4.6)."""
    arr = _fields_array(fields)
    for i, f in enumerate(arr.tolist()):
        vintid, pintid, priority, group, state, hw, eoi = f
        if pintid > 0x3FF or state > 3 or max(group, hw, eoi) > 1:
            raise ValueError(f"fields[{i}] = {arr[i]} has a field outside its width "
                             "(pintid <= 0x3FF, state <= 3, flags 0/1)")
    out = [ich.lr_value(vintid, priority, group=group, pending=bool(state & 1),
                        active=bool(state & 2), hw=bool(hw), pintid=pintid, eoi=bool(eoi))
           for vintid, pintid, priority, group, state, hw, eoi in arr.tolist()]
    return np.array(out, dtype=np.uint64).reshape(np.asarray(fields).shape)


def lr_decode_batch(lrs: Any) -> np.ndarray:
    """:data:`vgic.ich.LR_FIELDS` records from ICH_LR<n>_EL2 values."""
    arr = ich.lr_values(lrs)
    out = np.zeros(arr.size, dtype=ich.LR_FIELDS)
    for i, lr in enumerate(arr.reshape(-1).tolist()):
        hw = (lr >> 61) & 1
        out[i] = (lr & ich.LR_VINTID_MASK, (lr >> 32) & 0x3FF if hw else 0, (lr >> 48) & 0xFF,
                  (lr >> 60) & 1, lr >> 62, hw, 0 if hw else (lr >> 41) & 1)
    return out.reshape(arr.shape)


def copy_records(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy one record array into another of the same size (the benchmarks' baseline)."""
    d, s = ich.check_records(dst).view(np.uint8), ich.check_records(src).view(np.uint8)
    if d.shape[0] != s.shape[0]:
        raise ValueError("dst and src differ in size")
    d[:] = s


class Noop:
    """A do-nothing class with the per-vCPU methods' signatures."""

    def save_state(self, i: int) -> None:
        pass

    def restore_state(self, i: int) -> None:
        pass
