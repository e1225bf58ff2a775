"""Bad input never crashes (the project's standard): random calls on the
public API of a VM of each backend, with random and hostile arguments
(negative and huge integers, floats, None, strings, arrays of odd dtypes,
random bytes as trace records), either work or raise one of the documented
errors: ValueError, TypeError, OverflowError or a vgic.VgicError
(KvmError, UnmappedAccess, UndefinedInstruction).  The process never dies,
and after every call the state dumps cleanly."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vgic
from vgic import regmap as R

ALLOWED = (ValueError, TypeError, OverflowError, vgic.VgicError)

hostile_int = st.one_of(st.integers(-2**70, 2**70),
                        st.sampled_from([0, 1, 15, 16, 31, 32, 40, 63, 64, 1023, 2**32, 2**63, 2**64 - 1, 2**64, -1]))
hostile = st.one_of(hostile_int, st.floats(allow_nan=True), st.none(), st.text(max_size=3),
                    st.booleans(), st.just(np.int64(5)), st.just(np.float32(1.5)))
addr = st.one_of(hostile, st.integers(0x0800_0000, 0x0800_FFFF), st.integers(0x080A_0000, 0x080E_0000))
sysreg = st.one_of(st.sampled_from(["ICC_IAR1_EL1", "ICC_EOIR1_EL1", "ICC_DIR_EL1", "ICC_PMR_EL1",
                                    "ICC_AP1R3_EL1", "ICC_SGI1R_EL1", "ICC_CTLR_EL1", "NOPE",
                                    "ICH_LR15_EL2", "ICH_VTR_EL2", "ICH_HCR_EL2"]),
                   st.tuples(st.integers(0, 3), st.integers(0, 7), st.integers(0, 15),
                             st.integers(0, 15), st.integers(0, 7)), hostile)
array = st.one_of(st.lists(hostile_int, max_size=5), st.just(np.zeros((2, 2))),
                  st.just(np.array(["a"])), st.just(np.array([1.5, 2.5])), st.none(),
                  st.lists(st.integers(0, 3), max_size=5))

call = st.one_of(
    st.tuples(st.just("mmio_read"), addr, hostile, hostile),
    st.tuples(st.just("mmio_write"), addr, hostile, hostile, hostile),
    st.tuples(st.just("replay"), st.binary(min_size=0, max_size=24 * 8)),
    st.tuples(st.just("set_irq_level"), hostile, hostile, hostile),
    st.tuples(st.just("set_irq_levels"), array, array, array),
    st.tuples(st.just("vcpu"), st.integers(0, 1), st.sampled_from(["enter", "exit", "load", "put"])),
    st.tuples(st.just("sysreg_read"), st.integers(0, 1), sysreg),
    st.tuples(st.just("sysreg_write"), st.integers(0, 1), sysreg, hostile),
    st.tuples(st.just("hyp_read"), st.integers(0, 1), sysreg),
    st.tuples(st.just("hyp_write"), st.integers(0, 1), sysreg, hostile),
    st.tuples(st.just("get_attr"), st.sampled_from(range(10)), hostile),
    st.tuples(st.just("set_attr"), st.sampled_from(range(10)), hostile, hostile),
    st.tuples(st.just("has_attr"), hostile, hostile),
    st.tuples(st.just("batch"), st.sampled_from(["enter_vcpus", "exit_vcpus", "put_vcpus"]), array),
    st.tuples(st.just("irq"), hostile, hostile),
)


def run(vm, c):
    kind = c[0]
    if kind == "mmio_read":
        return vm.mmio_read(*c[1:])
    if kind == "mmio_write":
        return vm.mmio_write(*c[1:])
    if kind == "replay":
        raw = c[1][: len(c[1]) // 24 * 24]
        return vm.mmio_replay(np.frombuffer(raw, dtype=vgic.MMIO_ACCESS).copy())
    if kind == "set_irq_level":
        return vm.set_irq_level(*c[1:])
    if kind == "set_irq_levels":
        return vm.set_irq_levels(*c[1:])
    if kind == "vcpu":
        return getattr(vm.vcpus[c[1]], c[2])()
    if kind == "sysreg_read":
        return vm.vcpus[c[1]].sysreg_read(c[2])
    if kind == "sysreg_write":
        return vm.vcpus[c[1]].sysreg_write(c[2], c[3])
    if kind == "hyp_read":
        return vm.vcpus[c[1]].hyp.read(c[2])
    if kind == "hyp_write":
        return vm.vcpus[c[1]].hyp.write(c[2], c[3])
    if kind == "get_attr":
        return vm.get_device_attr(c[1], c[2])
    if kind == "set_attr":
        return vm.set_device_attr(c[1], c[2], c[3])
    if kind == "has_attr":
        return vm.has_device_attr(c[1], c[2])
    if kind == "batch":
        return getattr(vm, c[1])(c[2])
    if kind == "irq":
        return vm.irq(c[1], c[2])
    raise AssertionError(kind)


@pytest.mark.parametrize("backend", ["core", "pure"])
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(calls=st.lists(call, min_size=1, max_size=25))
def test_random_calls_raise_only_documented_errors(backend, calls):
    if backend == "core":
        pytest.importorskip("vgic._core.mmio")
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, backend=backend)
    vm.mmio_write(vm.dist_base + R.GICD_CTLR, 4, 2)
    vm.mmio_write(vm.dist_base + R.GICD_ISENABLER + 4, 4, 0xFFFFFFFF)
    for c in calls:
        try:
            run(vm, c)
        except ALLOWED:
            pass
        vm.state()
    for v in vm.vcpus:                  # the world switch still works afterwards
        if not v.running:
            v.enter()
        v.exit()
