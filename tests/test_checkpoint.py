"""``Part.checkpoint()``: each part's state read directly in the form its
``apply_state`` takes.  It must equal the round trip through names
(``check_state(state())``), which the model's state contract defines: a VM
that adopts another's checkpoints holds the same ``state()`` (how
``vm.restore(snap)`` moves a restored VM into the caller's, issue #11)."""
import pytest

import vgic
from vgic import snapbench, snapshot
from vgic import state as S


def busy_vm(backend):
    """A VM mid-life: LPIs mapped and pending, SPIs pending, SVE state,
    vCPUs that ran, an interrupt acknowledged and still active, timers
    that fired."""
    vm = snapbench.snapshot_vm(backend, nr_vcpus=3, nr_irqs=128, nr_lpis=200, vq=2, pending=40)
    for v in vm.vcpus:
        v.enter()
    vm.advance(5000)
    cpu0 = vm.vcpus[0]
    cpu0.sysreg_write("ICC_PMR_EL1", 0xF0)       # unmask, and enable group 1 (IHI 0069 §12.2)
    cpu0.sysreg_write("ICC_IGRPEN1_EL1", 1)
    acked = cpu0.sysreg_read("ICC_IAR1_EL1")
    assert acked != 1023            # something was pending to acknowledge
    for v in vm.vcpus:
        v.exit()
    return vm


@pytest.mark.parametrize("backend", ["core", "pure"])
@pytest.mark.parametrize("how", ["checkpoint", "names"])
def test_adopting_checkpoints_reproduces_the_state(backend, how):
    vm = busy_vm(backend)
    ref = vm.state()
    other = vgic.VM(**{**snapshot.geometry(vm), "backend": backend})
    for mine, theirs in zip(other.parts, vm.parts):
        mine.apply_state(theirs.checkpoint() if how == "checkpoint" else theirs.check_state(theirs.state()))
    got = other.state()
    got["vm"] = ref["vm"]           # (vCPU flags are the VM's, not a part's)
    assert S.diff(ref, got, limit=5) == []


@pytest.mark.parametrize("backend", ["core", "pure"])
def test_adopt_moves_state_and_ram(backend):
    """VM._adopt: the whole state and RAM, into the adopter's own buffer."""
    vm = busy_vm(backend)
    other = vgic.VM(**{**snapshot.geometry(vm), "backend": backend})
    buf = other.memory
    other._adopt(vm)
    assert other.memory is buf and (other.memory == vm.memory).all()
    assert S.diff(vm.state(), other.state(), limit=5) == []
