"""Differential tests: the Cython core against the pure-Python twin.

vgic/_core/mmio.pyi and gic.pyi: "vgic._pure.mmio / vgic._pure.gic are the
pure-Python twins with exactly this interface".  A Gic on its Bus is built
the same way from both (MPIDRs from vgic.default_mpidr, KVM's reset MPIDR,
kvm-facts §1.5; the frames mapped as a VM maps them) and driven with the
same random operations (hypothesis); every result, every exception type and
the final named state() must be identical.  Addresses are biased towards the real
register offsets of vgic.regmap (kvm-facts §1.2, §1.5, §1.6) and towards the
frame edges, sizes include the invalid ones, values include over-wide ones.

This module does not depend on VGIC_PUREPYTHON: it imports both
implementations itself, and is skipped when the core cannot be imported.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vgic
from vgic import regmap

pytest.importorskip("vgic._core.mmio")
from vgic import _backend
from vgic.state import diff

core = "core"
pure = "pure"

DIST_BASE = 0x0800_0000
REDIST_BASE = 0x080A_0000
U64 = 2**64 - 1

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Kernels:
    """A backend's Gic attached to its Bus as a VM maps them: the MMIO and
    injection methods of both, and dump() = the Gic's named state."""

    def __init__(self, backend: str, nr_vcpus: int, nr_irqs: int) -> None:
        _, impl = _backend.modules(backend)
        mpidrs = np.array([vgic.default_mpidr(i) for i in range(nr_vcpus)], dtype=np.uint64)
        self.gic = impl.gic.Gic(nr_vcpus, nr_irqs, mpidrs)
        self.bus = impl.mmio.Bus(nr_vcpus)
        self.bus.attach([regmap.FRAME_GICD, regmap.FRAME_GICR_RD, regmap.FRAME_GICR_SGI], self.gic)
        self.bus.map(DIST_BASE, [regmap.FRAME_GICD])
        self.bus.map(REDIST_BASE, [regmap.FRAME_GICR_RD, regmap.FRAME_GICR_SGI], nr_vcpus, per_vcpu=True)

    def __getattr__(self, name: str):
        target = self.bus if hasattr(self.bus, name) else self.gic
        return getattr(target, name)

    def dump(self) -> dict:
        return self.gic.state()


def build(backend: str, nr_vcpus: int, nr_irqs: int) -> Kernels:
    return Kernels(backend, nr_vcpus, nr_irqs)


def assert_same_dump(a: dict, b: dict) -> None:
    d = diff(a, b, limit=3)
    assert not d, "\n".join(d)


def outcome(fn, *args):
    """The value a call returns, or the type of what it raises (plus the
    address an UnmappedAccess names)."""
    try:
        return ("ok", fn(*args))
    except vgic.UnmappedAccess as exc:
        return ("raise", type(exc), exc.addr)
    except Exception as exc:
        return ("raise", type(exc))


def _interesting(rows) -> list[int]:
    offs = set()
    for r in rows:
        end = r.offset + r.length
        for o in (r.offset, r.offset + 4, r.offset + 8, (r.offset + end) // 2 & ~7,
                  end - 8, end - 4, end):
            if 0 <= o < 0x10000:
                offs.add(o)
    return sorted(offs)


OFFSETS = {frame: _interesting(f.regions) for frame, f in enumerate(regmap.FRAMES)}
OFFSETS[regmap.FRAME_GICD] += [regmap.GICD_TYPER, regmap.GICD_IIDR, regmap.GICD_TYPER2,
                               regmap.GICD_PIDR2, 0x40, 0xF00]
OFFSETS[regmap.FRAME_GICR_RD] += [regmap.GICR_TYPER + 4, regmap.GICR_PIDR2]

DELTAS = st.sampled_from([0] * 8 + [1, 2, 3, 4, 6, 7])
SIZES = st.sampled_from([1, 2, 4, 8] * 5 + [0, 3, 5, 16, -1, 2**64])


@st.composite
def frame_offsets(draw, frame: int) -> int:
    off = draw(st.one_of(st.sampled_from(OFFSETS[frame]), st.integers(0, 0xFFFF)))
    return min(off + draw(DELTAS), 0xFFFF)


@st.composite
def addresses(draw, nr_vcpus: int) -> int:
    kind = draw(st.sampled_from(["dist"] * 4 + ["rd"] * 3 + ["sgi"] * 3 + ["edge", "random"]))
    if kind == "dist":
        return DIST_BASE + draw(frame_offsets(regmap.FRAME_GICD))
    if kind in ("rd", "sgi"):
        v = draw(st.one_of(st.integers(0, nr_vcpus - 1), st.just(nr_vcpus)))
        frame = regmap.FRAME_GICR_RD if kind == "rd" else regmap.FRAME_GICR_SGI
        base = REDIST_BASE + v * 0x20000 + (0x10000 if kind == "sgi" else 0)
        return base + draw(frame_offsets(frame))
    if kind == "edge":
        return draw(st.sampled_from([
            0, DIST_BASE - 1, DIST_BASE - 8, DIST_BASE + 0x10000, DIST_BASE + 0xFFFF,
            REDIST_BASE - 4, REDIST_BASE + nr_vcpus * 0x20000,
            REDIST_BASE + nr_vcpus * 0x20000 - 4, U64, U64 - 7, -1, -8, 2**64, 2**70]))
    return draw(st.integers(0, U64))


@st.composite
def values(draw, size) -> int:
    if size in (1, 2, 4, 8):
        mask = (1 << (8 * size)) - 1
        return draw(st.one_of(st.integers(0, mask), st.integers(0, mask),
                              st.sampled_from([0, mask, mask + 1, -1, 0xA0A0A0A0 & mask]),
                              st.integers(0, U64)))
    return draw(st.integers(0, U64))


@st.composite
def vcpus(draw, nr_vcpus: int) -> int:
    return draw(st.one_of(st.integers(0, nr_vcpus - 1), st.integers(0, nr_vcpus - 1),
                          st.integers(0, nr_vcpus - 1), st.sampled_from([nr_vcpus, -1, 2**16])))


GEOMETRY = st.tuples(st.integers(1, 5), st.sampled_from([64, 96, 160, 256, 992]))


@st.composite
def mmio_ops(draw, nr_vcpus: int):
    addr = draw(addresses(nr_vcpus))
    size = draw(SIZES)
    vcpu = draw(vcpus(nr_vcpus))
    if draw(st.booleans()):
        return ("r", addr, size, vcpu)
    return ("w", addr, size, draw(values(size)), vcpu)


def run_mmio(gic, op):
    if op[0] == "r":
        _, addr, size, vcpu = op
        return outcome(gic.mmio_read, addr, size, vcpu)
    _, addr, size, value, vcpu = op
    return outcome(gic.mmio_write, addr, size, value, vcpu)


# ====================================================== single accesses
@SETTINGS
@given(data=st.data(), geometry=GEOMETRY)
def test_random_mmio_accesses_agree(data, geometry):
    """Guest MMIO through mmio_read/mmio_write: same values, same exception
    types (UnmappedAccess with the same .addr), same final state."""
    nr_vcpus, nr_irqs = geometry
    ops = data.draw(st.lists(mmio_ops(nr_vcpus), min_size=1, max_size=60))
    c, p = build(core, nr_vcpus, nr_irqs), build(pure, nr_vcpus, nr_irqs)
    for i, op in enumerate(ops):
        assert run_mmio(c, op) == run_mmio(p, op), f"op {i}: {op}"
    assert_same_dump(c.dump(), p.dump())


NON_INTS = st.sampled_from([0.0, 4.0, 2.0, float(DIST_BASE), 1.5, "4", "0x8000000", None,
                            b"\x04", [4], (4,), 1j])


@settings(SETTINGS, max_examples=80)
@given(arg=st.sampled_from(["addr", "size", "value", "vcpu"]), bad=NON_INTS,
       write=st.booleans())
def test_non_int_arguments_agree(arg, bad, write):
    """A non-integer argument (mmio.pyi: all are ints) must fail the same way
    in both implementations - and leave the same state."""
    args = {"addr": DIST_BASE + regmap.GICD_CTLR, "size": 4, "value": 2, "vcpu": 0}
    args[arg] = bad
    c, p = build(core, 2, 64), build(pure, 2, 64)
    if write or arg == "value":
        op = ("w", args["addr"], args["size"], args["value"], args["vcpu"])
    else:
        op = ("r", args["addr"], args["size"], args["vcpu"])
    assert run_mmio(c, op) == run_mmio(p, op)
    assert_same_dump(c.dump(), p.dump())


# ====================================================== replay
@st.composite
def records(draw, nr_vcpus: int):
    addr = draw(addresses(nr_vcpus))
    if not 0 <= addr <= U64:
        addr = DIST_BASE
    size = draw(st.sampled_from([1, 2, 4, 8] * 6 + [0, 3, 255]))
    write = draw(st.sampled_from([0, 1, 1, 2]))
    value = draw(values(size))
    if not 0 <= value <= U64:
        value = U64
    vcpu = draw(st.one_of(st.integers(0, nr_vcpus - 1), st.integers(0, nr_vcpus - 1),
                          st.integers(0, 2**16 - 1)))
    return (addr, size, write, value, vcpu)


def make_trace(recs) -> np.ndarray:
    trace = np.zeros(len(recs), dtype=vgic.MMIO_ACCESS)
    for i, (addr, size, write, value, vcpu) in enumerate(recs):
        trace[i] = (addr, value, vcpu, size, write)
    return trace


def replay_outcome(gic, trace):
    try:
        return ("ok", gic.mmio_replay(trace).tolist())
    except Exception as exc:
        index = re.search(r"trace\[(\d+)\]", str(exc))
        return ("raise", type(exc), index.group(1) if index else None,
                getattr(exc, "addr", None))


@SETTINGS
@given(data=st.data(), geometry=GEOMETRY)
def test_random_replay_agrees(data, geometry):
    """mmio_replay: same results, or the same exception type naming the same
    record; the same state either way (a rejected trace changes nothing)."""
    nr_vcpus, nr_irqs = geometry
    c, p = build(core, nr_vcpus, nr_irqs), build(pure, nr_vcpus, nr_irqs)
    for _ in range(data.draw(st.integers(1, 3))):
        recs = data.draw(st.lists(records(nr_vcpus), min_size=0, max_size=80))
        trace = make_trace(recs)
        if data.draw(st.booleans()) and len(trace) > 1:
            trace = np.concatenate([trace, trace])[::2]        # strided view
        before = c.dump()
        rc, rp = replay_outcome(c, trace), replay_outcome(p, trace)
        assert rc == rp
        if rc[0] == "raise":
            assert_same_dump(before, c.dump())
        assert_same_dump(c.dump(), p.dump())


@st.composite
def valid_records(draw, nr_vcpus: int):
    addr = draw(addresses(nr_vcpus))
    size = draw(st.sampled_from([1, 2, 4, 8]))
    return (addr, size, draw(st.integers(0, 1)), draw(st.integers(0, (1 << (8 * size)) - 1)),
            draw(st.integers(0, nr_vcpus - 1)))


@settings(SETTINGS, max_examples=100)
@given(data=st.data(), geometry=GEOMETRY)
def test_replay_matches_single_calls(data, geometry):
    """A valid trace replayed in one call gives what the same accesses give
    one by one (API.md: replay returns each access's read value, 0 for a
    write) - the core's replay against the twin's single calls."""
    nr_vcpus, nr_irqs = geometry
    recs = data.draw(st.lists(valid_records(nr_vcpus), min_size=1, max_size=50))
    recs = [r for r in recs if _mapped(r[0], nr_vcpus)]
    trace = make_trace(recs)
    one = build(core, nr_vcpus, nr_irqs)
    singles = build(pure, nr_vcpus, nr_irqs)
    out = one.mmio_replay(trace).tolist()
    expected = []
    for addr, size, write, value, vcpu in recs:
        if write:
            singles.mmio_write(addr, size, value, vcpu)
            expected.append(0)
        else:
            expected.append(singles.mmio_read(addr, size, vcpu))
    assert out == expected
    assert_same_dump(one.dump(), singles.dump())


def _mapped(addr: int, nr_vcpus: int) -> bool:
    return (DIST_BASE <= addr < DIST_BASE + 0x10000
            or REDIST_BASE <= addr < REDIST_BASE + nr_vcpus * 0x20000)


# ====================================================== userspace / lines
@st.composite
def uaccess_ops(draw, nr_vcpus: int, nr_irqs: int):
    kind = draw(st.sampled_from(["ur", "uw", "uw", "llr", "llw", "lvl", "lvl", "mw"]))
    vcpu = draw(st.integers(0, nr_vcpus - 1))
    if kind in ("ur", "uw"):
        frame = draw(st.integers(0, 2))
        off = draw(frame_offsets(frame))
        if kind == "ur":
            return ("ur", frame, vcpu, off)
        return ("uw", frame, vcpu, off, draw(st.one_of(st.integers(0, 0xFFFFFFFF),
                                                       st.sampled_from([0, 0xFFFFFFFF, 0x4B00243B,
                                                                        0x4B00343B, 0x2]))))
    if kind in ("llr", "llw"):
        intid = draw(st.sampled_from(range(0, 1024, 32)))
        if kind == "llr":
            return ("llr", vcpu, intid)
        return ("llw", vcpu, intid, draw(st.integers(0, 0xFFFFFFFF)))
    if kind == "lvl":
        return ("lvl", vcpu, draw(st.integers(16, nr_irqs - 1)), draw(st.booleans()))
    # A guest write, mostly to ICFGR / ISPENDR so level/edge state varies.
    reg = draw(st.sampled_from([regmap.GICD_ICFGR, regmap.GICD_ISPENDR, regmap.GICD_ICPENDR,
                                regmap.GICD_ISENABLER]))
    span = 2 if reg == regmap.GICD_ICFGR else 1
    off = reg + draw(st.integers(32, nr_irqs - 1)) * span // 8 // 4 * 4
    return ("mw", DIST_BASE + off, 4, draw(st.integers(0, 0xFFFFFFFF)), vcpu)


def run_uaccess(gic, op):
    kind = op[0]
    if kind == "ur":
        return outcome(gic.uaccess_read, *op[1:])
    if kind == "uw":
        return outcome(gic.uaccess_write, *op[1:])
    if kind == "llr":
        return outcome(gic.line_level_read, *op[1:])
    if kind == "llw":
        return outcome(gic.line_level_write, *op[1:])
    if kind == "lvl":
        _, vcpu, intid, level = op
        return outcome(gic.set_irq_level, vcpu, intid, level)
    _, addr, size, value, vcpu = op
    return outcome(gic.mmio_write, addr, size, value, vcpu)


@SETTINGS
@given(data=st.data(), geometry=GEOMETRY)
def test_random_uaccess_and_lines_agree(data, geometry):
    """uaccess_read/uaccess_write (kvm-facts §2 uaccess semantics),
    line_level_read/line_level_write (kvm-facts §6 LEVEL_INFO) and
    set_irq_level (kvm-facts §3.3): same results, same state, and the same
    irq_state() for every INTID."""
    nr_vcpus, nr_irqs = geometry
    ops = data.draw(st.lists(uaccess_ops(nr_vcpus, nr_irqs), min_size=1, max_size=60))
    c, p = build(core, nr_vcpus, nr_irqs), build(pure, nr_vcpus, nr_irqs)
    for i, op in enumerate(ops):
        assert run_uaccess(c, op) == run_uaccess(p, op), f"op {i}: {op}"
    assert_same_dump(c.dump(), p.dump())
    for v in range(nr_vcpus):
        for intid in range(32):
            assert tuple(c.irq_state(v, intid)) == tuple(p.irq_state(v, intid)), (v, intid)
    for intid in range(32, nr_irqs):
        assert tuple(c.irq_state(0, intid)) == tuple(p.irq_state(0, intid)), intid


@SETTINGS
@given(nr_irqs=st.sampled_from([64, 96, 256, 992]),
       frame=st.integers(0, 2), offset=st.integers(0, 0x10003))
def test_has_region_agrees(nr_irqs, frame, offset):
    """has_region (KVM_HAS_DEVICE_ATTR's region test) gives the same answer
    in both implementations for any offset."""
    c, p = build(core, 2, nr_irqs), build(pure, 2, nr_irqs)
    assert outcome(c.has_region, frame, offset) == outcome(p.has_region, frame, offset)


def test_has_region_agrees_exhaustively():
    """Every 4-byte aligned offset of every frame, 96 IRQs (so most per-IRQ
    registers hold unallocated INTIDs)."""
    c, p = build(core, 2, 96), build(pure, 2, 96)
    mismatches = [(frame, hex(off)) for frame in range(3) for off in range(0, 0x10000, 4)
                  if c.has_region(frame, off) != p.has_region(frame, off)]
    assert not mismatches, f"{len(mismatches)} offsets differ, e.g. {mismatches[:5]}"


# ====================================================== exhaustive sweep
@pytest.mark.parametrize("nr_vcpus,nr_irqs", [(1, 64), (3, 992)])
def test_every_offset_every_width_agrees(nr_vcpus, nr_irqs):
    """Deterministic complement: every 4-byte offset of every frame read at
    each width, then written with a pattern, then read again - identical
    results and state in both implementations."""
    c, p = build(core, nr_vcpus, nr_irqs), build(pure, nr_vcpus, nr_irqs)
    rng = np.random.default_rng(7)
    bases = [DIST_BASE] + [REDIST_BASE + v * 0x20000 + f * 0x10000
                           for v in range(nr_vcpus) for f in (0, 1)]
    for base in bases:
        offs = np.arange(0, 0x10000, 4, dtype=np.uint64)
        reads = np.zeros(offs.size * 4, dtype=vgic.MMIO_ACCESS)
        reads["addr"] = np.repeat(base + offs, 4)
        reads["size"] = np.tile(np.array([1, 2, 4, 8], dtype=np.uint8), offs.size)
        reads["vcpu"] = rng.integers(0, nr_vcpus, size=reads.size)
        writes = np.zeros(offs.size, dtype=vgic.MMIO_ACCESS)
        writes["addr"] = base + offs
        writes["size"] = 4
        writes["write"] = 1
        writes["value"] = rng.integers(0, 2**32, size=offs.size, dtype=np.uint64)
        for trace in (reads, writes, reads):
            rc, rp = c.mmio_replay(trace), p.mmio_replay(trace)
            diff = np.nonzero(rc != rp)[0]
            assert diff.size == 0, f"base {base:#x}: record {diff[:3]} {trace[diff[:3]]}"
        assert_same_dump(c.dump(), p.dump())
