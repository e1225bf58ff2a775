"""The snapshot workload and its measurements (issue #11's targets): a VM
with many vCPUs, IRQs, mapped LPIs, armed timers and SVE state, saved and
restored through KVM's ABI, beside the cost of copying the snapshot's
bytes once."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from vgic import fpregs, regmap, uapi
from vgic.bench import ItsWorkload, best_time


def snapshot_vm(backend: str | None = None, nr_vcpus: int = 512, nr_irqs: int = 992, nr_lpis: int = 100_000,
                vq: int = 16, pending: int = 1000, seed: int = 1) -> Any:
    """A VM as a guest left it: an ITS with ``nr_lpis`` mapped LPIs (the
    first ``pending`` of them pending), SPIs configured and some pending,
    every vCPU with SVE at ``vq`` quadwords (random Z/P/FFR), its vtimer
    armed in the future and its ptimer enabled, its CPU interface
    programmed.  ``nr_lpis`` = 0 gives a VM without an ITS."""
    from vgic import VM
    rng = np.random.default_rng(seed)
    sve: dict[str, Any] = {"sve": vq > 0, "sve_vqs": list(range(1, vq + 1)) if vq else None}
    if nr_lpis:
        w = ItsWorkload(backend, nr_lpis, nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, **sve)
        vm = w.vm
        k = np.arange(pending, dtype=np.int64)
        vm.signal_msis(k // w.events, k % w.events)
    else:
        vm = VM(nr_vcpus=nr_vcpus, nr_irqs=nr_irqs, backend=backend, **sve)
        vm.mmio_write(vm.dist_base + regmap.GICD_CTLR, 4, regmap.GICD_CTLR_ENABLE_G1)
    if vq:
        vm.finalize_vcpus(fpregs.KVM_ARM_VCPU_SVE)
    # SPIs: every one group 1, enabled, a priority; a few pending.
    d = vm.dist_base
    for w32 in range(1, nr_irqs // 32):
        vm.mmio_write(d + regmap.GICD_IGROUPR + 4 * w32, 4, 0xFFFFFFFF)
        vm.mmio_write(d + regmap.GICD_ISENABLER + 4 * w32, 4, 0xFFFFFFFF)
    for intid in range(32, nr_irqs, 7):
        vm.set_irq_level(intid, True)
    # The vCPUs' own registers, through the one-reg ABI.
    ids = [r for r in vm.vcpus[0].get_reg_list() if r != fpregs.KVM_REG_ARM64_SVE_VLS]
    data = vm.get_one_regs(ids)
    col = 0
    for r in ids:
        size = 1 << ((r >> 52) & 0xF)
        if r in (uapi.KVM_REG_ARM_TIMER_CTL, uapi.KVM_REG_ARM_PTIMER_CTL):
            data[:, col] = 1                                    # ENABLE
        elif r in (uapi.KVM_REG_ARM_TIMER_CVAL, uapi.KVM_REG_ARM_PTIMER_CVAL):
            data[:, col:col + 8] = np.frombuffer((1 << 40).to_bytes(8, "little"), dtype=np.uint8)
        elif size > 8:
            data[:, col:col + size] = rng.integers(0, 256, (len(vm.vcpus), size), dtype=np.uint8)
        col += size
    vm.set_one_regs(ids, data)
    return vm


def save_restore_seconds(vm: Any, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds of ``vm.save(ram=False)``, of
    ``VM.restore`` of it (the VM built from the snapshot included, and
    apart), and of copying the snapshot's register bytes once (one
    ``numpy`` copy of each section), with the snapshot's sizes."""
    from vgic import VM, snapshot
    snap = vm.save(ram=False)
    save = best_time(lambda: vm.save(ram=False), repeat)
    blob = snap.to_bytes()
    to_bytes = best_time(snap.to_bytes, repeat)
    from_bytes = best_time(lambda: type(snap).from_bytes(blob), repeat)
    arrays = [s.values for s in snap.sections.values()]
    copy = best_time(lambda: [a.copy() for a in arrays], max(repeat, 5))
    flat = np.frombuffer(blob, dtype=np.uint8)
    copy_blob = best_time(flat.copy, max(repeat, 5))
    options = {**snap.geometry, "memory": vm.memory.copy(), "backend": vm.backend}
    options.pop("ram_size")
    build = restore = float("inf")
    for _ in range(repeat):
        # A VMM builds the VM, then restores into it: time both, apart.
        memory = vm.memory.copy()
        t0 = time.perf_counter()
        fresh = VM(**{**options, "memory": memory})
        t1 = time.perf_counter()
        snapshot.apply(fresh, snap, None)
        t2 = time.perf_counter()
        build, restore = min(build, t1 - t0), min(restore, t2 - t1)
    return {"save": save, "restore": restore, "build": build, "to_bytes": to_bytes, "from_bytes": from_bytes,
            "copy_sections": copy, "copy_bytes": copy_blob, "payload": float(snap.payload_bytes()),
            "nbytes": float(len(blob))}


__all__ = ["snapshot_vm", "save_restore_seconds"]
