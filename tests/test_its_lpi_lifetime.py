"""The lifetime of an LPI no ITE maps (an "orphan"), on both backends.

KVM (its-facts-A §5.5; vgic.c vgic_prune_ap_list, vgic_put_irq): an LPI made
pending by INT is queued on its target's ap_list, which holds a reference;
DISCARD drops the ITE's.  The LPI then lives until the target's prune drops
it from the list - at the target's next exit, if by then it is not
deliverable (disabled by INV/INVALL, the distributor off).  The model queues
at the target's next entry, so such an LPI sits on no list: the prune of its
target sweeps it the same way.  A failed RESTORE_TABLES leaves such an LPI as
it was (the project's rule: a rejected restore changes nothing).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vgic import regmap as R

sys.path.insert(0, str(Path(__file__).resolve().parent))
from its_helpers import VALID, Guest, discard, drain, int_, invall, its_vm, mapc, mapd, mapti, set_prop, write64

L = 8192
ENABLED, DISABLED = 0xA3, 0xA2        # priority 0xA0, enable bit set / clear


@pytest.fixture(params=["core", "pure"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def orphan(backend: str) -> tuple:
    """An LPI made pending by INT, whose only ITE DISCARD then removed."""
    vm = its_vm(backend, nr_vcpus=1)
    g = Guest(vm)
    set_prop(vm, g.lay, L, ENABLED)
    g.send(mapd(0, 4, g.itt(0)), mapc(0, 0), mapti(0, 0, L, 0), int_(0, 0), discard(0, 0))
    assert vm.gic.gic.lpis() == [L]          # pending and enabled: on its way to vCPU 0
    return vm, g


def test_a_deliverable_orphan_is_delivered_then_freed(backend):
    """Still deliverable at the target's entry: the guest takes it; after it
    completes, nothing holds it and it is freed."""
    vm, _ = orphan(backend)
    assert drain(vm, 0) == [L]
    assert vm.gic.gic.lpis() == []


def test_an_orphan_disabled_before_the_target_runs_is_freed_at_its_exit(backend):
    """Disabled (INVALL) before vCPU 0 runs: KVM's prune at vCPU 0's next
    exit drops and frees it; re-enabling it later finds no LPI to deliver."""
    vm, g = orphan(backend)
    set_prop(vm, g.lay, L, DISABLED)
    g.send(invall(0))
    assert vm.gic.gic.lpis() == [L]          # until the target's prune
    assert drain(vm, 0) == []
    assert vm.gic.gic.lpis() == []
    set_prop(vm, g.lay, L, ENABLED)
    g.send(invall(0))
    assert drain(vm, 0) == []


def test_an_orphan_with_the_distributor_off_is_freed_at_its_exit(backend):
    """GICD_CTLR.EnableGrp1 off makes the oracle name no vCPU: the prune
    frees it, and turning the distributor back on delivers nothing."""
    vm, _ = orphan(backend)
    ctlr = vm.mmio_read(vm.dist_base + R.GICD_CTLR, 4)
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, ctlr & ~0x2)
    assert drain(vm, 0) == []
    assert vm.gic.gic.lpis() == []
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, ctlr)
    assert drain(vm, 0) == []


def test_a_failed_restore_leaves_an_orphan_as_it_was(backend):
    """A RESTORE_TABLES that maps the orphan and then fails (a DTE with
    Size 31, -EINVAL) drops only the references it added: the LPI and its
    state are as before."""
    vm, g = orphan(backend)
    set_prop(vm, g.lay, L, DISABLED)
    g.send(invall(0))
    before = vm.irq(L)
    vm.mmio_write(g.its + R.GITS_CTLR, 4, 0)
    vm.its.its.reset()
    vm.mmio_write(g.its + R.GITS_BASER, 8, VALID | g.lay.device_table)
    vm.mmio_write(g.its + R.GITS_BASER + 8, 8, VALID | g.lay.collection_table)
    write64(vm, g.lay.collection_table, VALID)                       # ICID 0 -> vCPU 0
    write64(vm, g.lay.collection_table + 8, 0)
    write64(vm, g.lay.device_table, VALID | (1 << 49) | ((g.itt(0) >> 8) << 5) | 3)   # next = 1
    write64(vm, g.lay.device_table + 8, VALID | ((g.itt(1) >> 8) << 5) | 31)        # Size 31: EINVAL
    write64(vm, g.itt(0), L << 16)                                   # event 0 -> LPI 8192, last
    assert vm.its.its.restore_tables() == -22
    assert vm.gic.gic.lpis() == [L]
    assert vm.irq(L) == before
