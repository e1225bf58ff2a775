"""Safety of the ITS kernel's state entry points, on both backends.

* ``Its.apply_arrays`` (public, vgic/_core/its.pyi) checks every id, EventID
  and count the tables index before anything changes
  (``its_state.check_arrays``): a DeviceID or ICID outside 16 bits, a
  duplicate, an EventID at or above 2**num_eventid_bits (SAVE_TABLES writes
  the ITE at ITT + EventID * 8), more ITEs than ``max_ites``... raise
  ``vgic.StateError`` (a ValueError) naming the field, and the ITS is as
  before; the core and the twin raise the same message.  RESET then ends.
* ``Its.load_state`` refuses ITEs naming an LPI the Gic does not hold (or
  LPIs whose ``ite_count`` disagrees), as the ITS part's ``check_links``.
* ``pending.sync_scan`` refuses tables whose INTIDs do not fit 32 bits.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import vgic
from vgic import _backend, its_state
from vgic import regmap as R

sys.path.insert(0, str(Path(__file__).resolve().parent))
from its_helpers import Guest, drain, its_vm, mapc, mapd, mapti, read64, set_prop

LPI = 8192


@pytest.fixture(params=["core", "pure"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "core":
        pytest.importorskip("vgic._core.its")
    return request.param


def mapped_vm(backend: str, **kw: object) -> tuple[vgic.VM, Guest]:
    """One device (DeviceID 2, 4 EventID bits) with ITEs 1 -> 8192 and
    5 -> 8193 in collection 3 (vCPU 0), and collection 7 (vCPU 1)."""
    vm = its_vm(backend, nr_vcpus=2, **kw)
    g = Guest(vm)
    for intid in (LPI, LPI + 1):
        set_prop(vm, g.lay, intid)
    g.send(mapd(2, 4, g.itt(0)), mapc(3, 0), mapc(7, 1), mapti(2, 1, LPI, 3), mapti(2, 5, LPI + 1, 3))
    return vm, g


def with_device(a: its_state.ItsArrays, k: int = 0, **changes: object) -> its_state.ItsArrays:
    devs = list(a.devices)
    devs[k] = devs[k]._replace(**changes)
    return dataclasses.replace(a, devices=devs)


def ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


# (name, the bad arrays made from a good one, the message it must raise)
Mutation = Callable[[its_state.ItsArrays], its_state.ItsArrays]
BAD: list[tuple[str, Mutation, str]] = [
    ("devid 70000", lambda a: with_device(a, devid=70000),
     r"its\.devices\[0\]\.devid: 0x11170 is outside 0x0\.\.0xffff"),
    ("devid -1", lambda a: with_device(a, devid=-1), r"its\.devices\[0\]\.devid: -0x1 is outside"),
    ("devid 10**8", lambda a: with_device(a, devid=10**8), r"its\.devices\[0\]\.devid: 0x5f5e100 is outside"),
    ("duplicate devid", lambda a: dataclasses.replace(a, devices=[a.devices[0], a.devices[0]]),
     r"its\.devices\[1\]\.devid: device 2 is listed twice"),
    ("devids decreasing", lambda a: dataclasses.replace(a, devices=[a.devices[0]._replace(devid=9), a.devices[0]]),
     r"its\.devices\[1\]\.devid: device 2 is not in increasing DeviceID order"),
    ("icid 70000", lambda a: dataclasses.replace(a, collections=[(70000, 0)]),
     r"its\.collections\[0\]\.icid: 0x11170 is outside 0x0\.\.0xffff"),
    ("icid -1", lambda a: dataclasses.replace(a, collections=[(-1, 0)]), r"its\.collections\[0\]\.icid: -0x1"),
    ("duplicate icid", lambda a: dataclasses.replace(a, collections=[(3, 0), (7, 1), (3, 1)]),
     r"its\.collections\[2\]\.icid: collection 3 is listed twice"),
    ("target beyond the vCPUs", lambda a: dataclasses.replace(a, collections=[(3, 0), (7, 2)]),
     r"its\.collections\[1\]\.target: 2 is not a vCPU"),
    ("event 2**nbits", lambda a: with_device(a, event=ids(1, 16)),
     r"its\.devices\[0\]\.event\[1\]: 0x10 is outside 0x0\.\.0xf"),
    ("event 2**32", lambda a: with_device(a, event=ids(1, 1 << 32)), r"its\.devices\[0\]\.event\[1\]: 0x100000000"),
    ("events not increasing", lambda a: with_device(a, event=ids(5, 1)),
     r"its\.devices\[0\]\.event\[1\]: EventID 1 is not above the one before"),
    ("duplicate event", lambda a: with_device(a, event=ids(5, 5)), r"its\.devices\[0\]\.event\[1\]: EventID 5"),
    ("nbits 17", lambda a: with_device(a, nbits=17), r"its\.devices\[0\]\.nbits: 0x11 is outside 0x1\.\.0x10"),
    ("nbits 0", lambda a: with_device(a, nbits=0), r"its\.devices\[0\]\.nbits: 0x0 is outside"),
    ("pINTID below 8192", lambda a: with_device(a, lpi=ids(LPI, 8191)), r"its\.devices\[0\]\.lpi\[1\]: 0x1fff"),
    ("pINTID 65536", lambda a: with_device(a, lpi=ids(LPI, 65536)), r"its\.devices\[0\]\.lpi\[1\]: 0x10000"),
    ("ITE icid 70000", lambda a: with_device(a, icid=ids(3, 70000)), r"its\.devices\[0\]\.icid\[1\]: 0x11170"),
    ("ITE in no collection", lambda a: with_device(a, icid=ids(3, 4)),
     r"its\.devices\[0\]\.has_coll\[1\]: ICID 4 names no collection"),
    ("short column", lambda a: with_device(a, lpi=ids(LPI)), r"its\.devices\[0\]\.lpi: expected a 1-D array of 2"),
    ("float column", lambda a: with_device(a, event=np.array([1.0, 5.0])),
     r"its\.devices\[0\]\.event: expected integers"),
    ("misaligned ITT", lambda a: with_device(a, itt_addr=a.devices[0].itt_addr + 8),
     r"its\.devices\[0\]\.itt_addr: .* is not a 256-byte aligned address"),
    ("not a Device", lambda a: dataclasses.replace(a, devices=[tuple(a.devices[0])]),
     r"its\.devices\[0\]: expected vgic\.its_state\.Device, got tuple"),
    ("cwriter misaligned", lambda a: dataclasses.replace(a, cwriter=a.cwriter + 8),
     r"its\.cwriter: .* is not a command offset"),
    ("creadr beyond the queue", lambda a: dataclasses.replace(a, creadr=0x10000),
     r"its\.creadr: 0x10000 is not a command offset inside the 0x10000-byte queue"),
    ("enabled 2", lambda a: dataclasses.replace(a, enabled=2), r"its\.enabled: 0x2 is outside 0x0\.\.0x1"),
    ("abi_rev 1", lambda a: dataclasses.replace(a, abi_rev=1), r"its\.abi_rev: 0x1 is outside 0x0\.\.0x0"),
    ("baser -1", lambda a: dataclasses.replace(a, baser=(a.baser[0], -1)), r"its\.baser\[1\]: -0x1 is outside"),
]


@pytest.mark.parametrize("name,mutate,message", BAD, ids=[b[0] for b in BAD])
def test_apply_arrays_refuses_and_changes_nothing(backend, name, mutate, message):
    vm, g = mapped_vm(backend)
    its = vm.its.its
    before = its.state()
    with pytest.raises(ValueError, match=message) as ei:
        its.apply_arrays(mutate(its.arrays()))
    assert isinstance(ei.value, vgic.StateError)
    assert its.state() == before
    assert its.nr_ites == 2
    # The tables still work: an MSI is delivered, and RESET ends and empties them.
    assert vm.signal_msi(2, 5) is True
    assert drain(vm, 0) == [LPI + 1]
    its.reset()
    assert its.arrays().devices == [] and its.arrays().collections == [] and its.nr_ites == 0
    assert vm.gic.gic.lpis() == []


@pytest.mark.parametrize("name,mutate,message", BAD, ids=[b[0] for b in BAD])
def test_apply_arrays_backends_raise_the_same(name, mutate, message):
    pytest.importorskip("vgic._core.its")
    errors = []
    for backend in ("core", "pure"):
        vm, _ = mapped_vm(backend)
        with pytest.raises(vgic.StateError) as ei:
            vm.its.its.apply_arrays(mutate(vm.its.its.arrays()))
        errors.append(str(ei.value))
    assert errors[0] == errors[1]


def test_apply_arrays_refuses_more_ites_than_max_ites(backend):
    vm, _ = mapped_vm(backend, its_max_ites=2)
    its = vm.its.its
    a = its.arrays()
    second = a.devices[0]._replace(devid=3, event=ids(0), lpi=ids(LPI), icid=ids(3), has_coll=np.array([True]))
    before = its.state()
    with pytest.raises(vgic.StateError, match=r"its\.devices: more than this ITS's max_ites 2 ITEs"):
        its.apply_arrays(dataclasses.replace(a, devices=[a.devices[0], second]))
    assert its.state() == before and its.nr_ites == 2


def test_apply_arrays_refuses_a_non_itsarrays(backend):
    vm, _ = mapped_vm(backend)
    with pytest.raises(vgic.StateError, match=r"expected vgic\.its_state\.ItsArrays, got dict"):
        vm.its.its.apply_arrays(vm.its.its.state())


def test_apply_arrays_round_trip_and_columns_of_any_integer_dtype(backend):
    """Good arrays still apply, whatever integer/bool dtypes the columns
    have; the last EventID of the ITT (2**nbits - 1) saves at its slot."""
    vm, g = mapped_vm(backend)
    its = vm.its.its
    a = its.arrays()
    dev = a.devices[0]
    a2 = with_device(a, event=[1, 15], lpi=dev.lpi.astype(np.int64), icid=[3, 3], has_coll=[1, 1])
    its.apply_arrays(a2)
    got = its.arrays()
    assert got.devices[0].event.tolist() == [1, 15]
    assert got.devices[0].event.dtype == np.uint32 and got.devices[0].icid.dtype == np.uint16
    assert got.devices[0].icid.tolist() == [3, 3] and got.devices[0].has_coll.tolist() == [True, True]
    assert got.collections == [(3, 0), (7, 1)] and its.nr_ites == 2
    # LPI 8193 is EventID 15 now.
    assert vm.signal_msi(2, 15) is True
    assert drain(vm, 0) == [LPI + 1]
    assert vm.signal_msi(2, 5) is False
    assert its.save_tables() == 0
    # ITE 15 at ITT + 15 * 8: pINTID 8193 (bits [47:16]), ICID 3, next 0 (the last).
    assert read64(vm, g.itt(0) + 15 * 8) == ((LPI + 1) << 16) | 3
    assert read64(vm, g.itt(0) + 1 * 8) == (14 << 48) | (LPI << 16) | 3


def test_reset_frees_every_collection(backend):
    """free_all_colls walks a bounded count: every collection freed, in one pass."""
    vm, g = mapped_vm(backend)
    its = vm.its.its
    a = its.arrays()
    colls = [(icid, icid % 2) for icid in range(1000, 0, -1)]
    its.apply_arrays(dataclasses.replace(a, collections=colls))
    assert its.arrays().collections == colls
    its.reset()
    assert its.arrays().collections == [] and its.arrays().devices == [] and its.nr_ites == 0
    assert vm.gic.gic.lpis() == []


# ----------------------------------------------------------- load_state links
def test_kernel_load_state_refuses_ites_naming_absent_lpis(backend):
    vm, _ = mapped_vm(backend)
    st = vm.its.its.state()
    other = its_vm(backend, nr_vcpus=2)
    Guest(other)
    before = other.its.its.state()
    with pytest.raises(vgic.StateError, match=r"its\.devices: an ITE maps LPI 8192, which gic\.lpi does not hold"):
        other.its.its.load_state(st)
    assert other.its.its.state() == before
    assert other.gic.gic.lpis() == []
    # Nothing maps (2, 5): the MSI is blocked, not latched on a missing LPI.
    assert other.signal_msi(2, 5) is False
    assert drain(other, 0) == [] and other.gic.gic.lpis() == []
    # The state on its own VM (whose Gic holds both LPIs) loads.
    vm.its.its.load_state(st)
    assert vm.its.its.state() == st


def test_kernel_load_state_refuses_wrong_ite_counts(backend):
    vm, _ = mapped_vm(backend)
    st = vm.its.its.state()
    # One ITE dropped: LPI 8193 keeps ite_count 1 in the Gic, with no ITE.
    ites = st["devices"][0]["ites"]
    st["devices"][0]["ites"] = {k: v[:1] for k, v in ites.items()}
    before = vm.its.its.state()
    with pytest.raises(vgic.StateError, match=r"gic\.lpi: LPI 8193 has ite_count 1 but 0 ITEs map it"):
        vm.its.its.load_state(st)
    assert vm.its.its.state() == before


def test_part_load_state_message_unchanged(backend):
    """The ITS part's check_links (now its_state.check_lpi_links) keeps its message."""
    vm, _ = mapped_vm(backend)
    other = its_vm(backend, nr_vcpus=2)
    message = r"^its\.devices: an ITE maps LPI 8192, which vgic_v3\.lpi does not hold$"
    with pytest.raises(vgic.StateError, match=message):
        other.its.load_state(vm.its.state())


# ------------------------------------------------------------------ sync_scan
def test_sync_scan_refuses_tables_beyond_32_bit_intids(backend):
    pending = _backend.modules(backend)[1].pending
    table = np.zeros((1 << 29) + 1, dtype=np.uint8)     # (calloc'd: no page is touched)
    with pytest.raises(ValueError, match=r"table holds 536870913 bytes: INTIDs must fit 32 bits"):
        pending.sync_scan(table, np.zeros(1, dtype=np.uint64))
    small = np.zeros(R.LPI_BASE // 8 + 2, dtype=np.uint8)
    small[R.LPI_BASE // 8 + 1] = 0x81
    mapped = np.zeros(small.shape[0] // 8 + 1, dtype=np.uint64)
    mapped[(R.LPI_BASE + 15) >> 6] |= np.uint64(1 << ((R.LPI_BASE + 15) & 63))
    assert pending.sync_scan(small, mapped).tolist() == [R.LPI_BASE + 15]
    assert small[R.LPI_BASE // 8 + 1] == 0x01



def test_vgic_part_alone_keeps_the_lpis_ites_map(backend):
    """Loading the vGICv3 part's state alone must not drop an LPI an ITE
    still maps (KVM: an ITE holds a reference on its vgic_irq,
    its-facts-A §5.5): refused with StateError, nothing changes, and the
    MSI still reaches the LPI."""
    vm = its_vm(backend, nr_vcpus=1)
    g = Guest(vm)
    set_prop(vm, g.lay, 8192)
    g.send(mapd(0, 4, g.itt(0)), mapc(0, 0))
    before_lpi = vm.state()["vgic_v3"]
    g.send(mapti(0, 0, 8192, 0))
    now = vm.state()
    with pytest.raises(vgic.StateError, match="LPI 8192"):
        vm.gic.load_state(before_lpi)
    assert vm.state() == now
    assert vm.gic.gic.lpis() == [8192]
