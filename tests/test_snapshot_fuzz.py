"""Fuzz of the snapshot reader and of restoring what it reads.

The rule (issue #11, and the ``SnapshotError`` contract in vgic/errors.py):
"a fuzz of at least 10^6 truncated, bit-flipped and random snapshot byte
strings: never a crash or hang, and the target VM unchanged".  For every
input here:

* ``vgic.Snapshot.from_bytes(data)`` returns a Snapshot or raises
  ``vgic.SnapshotError`` - nothing else, and in bounded time;
* for a Snapshot it returns, ``target.restore(snap)`` and
  ``vgic.VM.restore(snap)`` succeed or raise ``SnapshotError`` (never a
  TypeError for a Snapshot, never anything else); when ``target.restore``
  refuses, the target VM's memory is unchanged (checked after every input)
  and so is its ``state()`` (checked on a sample).

The snapshot format (vgic/snapshot.py): a fixed header
``struct.Struct("<8sHHIQQI4x")`` (magic, major, minor, flags, header
length, payload length, CRC-32), a msgpack header (meta: format, geometry,
host clock; one spec per section: name, group, per_vcpu, ids as [first,
count, step] runs, dtype, shape, offset, nbytes; ram), then the payload
(the arrays and RAM, optionally zstd-compressed).  The CRC-32 covers the
fixed header (CRC field zero) and everything after it, so a blind mutation
is refused at the checksum; most mutations here therefore recompute it
(and the two lengths) so that the msgpack header, the section specs, the
arrays and the restore behind them are reached.

Mutation kinds (counted separately in the summary the test prints):

``truncate``       cut at every kind of boundary (inside and at the end of
                   each fixed-header field, of the msgpack header, at each
                   section's and RAM's start and end, one byte short, random);
``extend``         bytes appended;
``bitflip``        one bit flipped (fixed header, msgpack header or payload);
``multiflip``      2..64 bits flipped;
``random``         random bytes of random length;
``random_header``  a valid magic and plausible fixed header (lengths
                   consistent, CRC valid or not) before random bytes or a
                   random msgpack object;
``fixed_fields``   fixed-header fields changed (version, flags, lengths),
                   CRC recomputed;
``header_fields``  1-4 edits of the decoded msgpack header (section shapes,
                   offsets, nbytes, dtypes, ids runs with huge counts and
                   negative numbers, names, groups, per_vcpu, dropped and
                   duplicated sections, the meta geometry - nr_vcpus 0 or
                   huge, sve_vqs garbage, RAM size - wrong types, nested
                   garbage anywhere), re-encoded, lengths and CRC fixed;
``header_raw``     the msgpack header replaced by hand-made bytes (deep
                   nesting, truncated msgpack, trailing bytes), CRC fixed;
``payload``        register values and RAM bytes changed, CRC fixed (a
                   compressed payload is recompressed, or its compressed
                   bytes changed);
and the same on zstd-compressed snapshots.

The bases are snapshots of a small VM a guest has used (2 vCPUs, 64 IRQs,
an ITS with 16 mapped and 4 pending LPIs in 1 MiB of RAM, SVE with VQ <= 2,
armed timers, a programmed CPU interface, both vCPUs run once), with and
without RAM, plain and zstd, and one of another geometry (so that
``VM.restore`` builds VMs the target cannot take).

Counts: ``VGIC_FUZZ_SNAPSHOTS`` inputs (default 10000; the issue's count is
``VGIC_FUZZ_SNAPSHOTS=1000000``), ``VGIC_FUZZ_SEED`` the seed,
``VGIC_FUZZ_REPORT`` a path for the summary as JSON.  A failure names the
seed, the input's number and kind, so ``VGIC_FUZZ_SEED`` replays it.  The
backend is the process default (``VGIC_PUREPYTHON=1`` fuzzes the twin).
The outcome of the full runs is in docs/snapshot-fuzz.md.

A bug the fuzz finds gets a test of its own at the end of this file (a
strict xfail while it is open, with an entry in ``KNOWN`` so that the fuzz
counts it by name and goes on; a regression test once it is fixed).
"""
from __future__ import annotations

import copy
import faulthandler
import json
import os
import random
import struct
import time
import tracemalloc
import zlib
from collections import Counter, defaultdict
from typing import Any

import msgpack
import numpy as np
import pytest

import vgic
from vgic import regmap as R
from vgic.state import diff

COUNT = int(os.environ.get("VGIC_FUZZ_SNAPSHOTS", "10000"))
_SEED = os.environ.get("VGIC_FUZZ_SEED")
SEED = int(_SEED, 0) if _SEED else 0x5A_B5_0F
REPORT = os.environ.get("VGIC_FUZZ_REPORT")

INPUT_BUDGET = 10.0         # seconds one input may take (decode and both restores)
WATCHDOG = 300              # seconds without progress before faulthandler ends the process
STATE_EVERY = 25            # compare the target's whole state() on every 25th refused restore

# The format (vgic/snapshot.py; docs in its docstrings).
FIXED = struct.Struct("<8sHHIQQI4x")
MAGIC = b"VGICSNAP"
FLAG_ZSTD = 1

# ------------------------------------------------------------------ the guest
RAM_SIZE = 1 << 20
# Guest-physical layout, offsets from the RAM base (64 KiB aligned tables).
PROP, PEND, CMDQ, DEVTAB, COLLTAB, ITT, DATA = 0x0_0000, 0x1_0000, 0x3_0000, 0x4_0000, 0x5_0000, 0x6_0000, 0x8_0000
VALID = 1 << 63
SVE_VLS = 0x606000000015FFFF
FPSR, FPCR = 0x60200000001000D4, 0x60200000001000D5
TIMER_CTL, TIMER_CVAL, PTIMER_CTL, PTIMER_CVAL = (0x603000000013DF19, 0x603000000013DF02, 0x603000000013DF11,
                                                  0x603000000013DF12)
ICC_PMR, ICC_BPR1, ICC_IGRPEN1 = 0xC230, 0xC663, 0xC667
GRP_CPU_SYSREGS = 6
KVM_ARM_VCPU_SVE = 4


def _w64(vm: vgic.VM, off: int, value: int) -> None:
    vm.memory[off:off + 8] = np.frombuffer(int(value).to_bytes(8, "little"), dtype=np.uint8)


def guest_vm(backend: str | None = None, seed: int = 7) -> vgic.VM:
    """The fuzz's target: a small VM after a guest used it.  The ITS is set
    up as Linux does (kvm-facts §5): LPI property and pending tables,
    GITS_CBASER and flat device/collection tables in RAM, MAPC/MAPD/MAPTI
    through the command queue, then four MSIs."""
    rng = np.random.default_rng(seed)
    vm = vgic.VM(nr_vcpus=2, nr_irqs=64, its=True, sve=True, sve_vqs=[1, 2], ram_size=RAM_SIZE, backend=backend)
    ram, d, its = vm.ram_base, vm.dist_base, vm.its_base
    vm.memory[DATA:DATA + 0x10000] = rng.integers(0, 256, 0x10000, dtype=np.uint8)
    vm.mmio_write(d + R.GICD_CTLR, 4, R.GICD_CTLR_ENABLE_G1)
    vm.mmio_write(d + R.GICD_IGROUPR + 4, 4, 0xFFFFFFFF)
    vm.mmio_write(d + R.GICD_ISENABLER + 4, 4, 0x0F0F_F0F0)
    vm.mmio_write(d + R.GICD_ICFGR + 8, 4, 0xA0A0_A0A0)
    for w in range(8, 16):
        vm.mmio_write(d + R.GICD_IPRIORITYR + 4 * w, 4, int(rng.integers(0, 1 << 32)))
    for intid in range(32, 64, 3):
        vm.mmio_write(d + R.GICD_IROUTER + 8 * intid, 8, 1)
    vm.mmio_write(d + R.GICD_ISPENDR + 4, 4, 0x0000_1111)
    vm.mmio_write(d + R.GICD_ISACTIVER + 4, 4, 0x0100_0000)
    for intid in (33, 37, 45):
        vm.set_irq_level(intid, True)
    vm.memory[PROP:PROP + 64] = 0xA3            # LPIs 8192..8255: priority 0xA0, enabled
    for v in vm.vcpus:
        rd = v.rd_base
        vm.mmio_write(rd + R.GICR_PROPBASER, 8, (ram + PROP) | 15, v.id)
        vm.mmio_write(rd + R.GICR_PENDBASER, 8, ram + PEND + v.id * 0x10000, v.id)
        vm.mmio_write(rd + R.GICR_CTLR, 4, R.GICR_CTLR_ENABLE_LPIS, v.id)
        vm.mmio_write(v.sgi_base + R.GICR_ISENABLER0, 4, 0xFFFF_00FF, v.id)
        vm.mmio_write(v.sgi_base + R.GICR_IPRIORITYR0 + 4, 4, 0x8040_2010, v.id)
        vm.mmio_write(v.sgi_base + R.GICR_ISPENDR0, 4, 0x0000_0030, v.id)
        vm.set_irq_level(23, True, v.id)
    vm.mmio_write(its + R.GITS_CBASER, 8, VALID | (ram + CMDQ))
    vm.mmio_write(its + R.GITS_BASER, 8, VALID | (ram + DEVTAB))
    vm.mmio_write(its + R.GITS_BASER + 8, 8, VALID | (ram + COLLTAB))
    vm.mmio_write(its + R.GITS_CTLR, 4, R.GITS_CTLR_ENABLED)
    cmds = [[R.GITS_CMD_MAPC, 0, VALID | (v << 16) | v, 0] for v in range(2)]
    for dev in range(2):
        cmds.append([R.GITS_CMD_MAPD | (dev << 32), 2, VALID | (ram + ITT + dev * 0x100), 0])
        for ev in range(8):
            cmds.append([R.GITS_CMD_MAPTI | (dev << 32), ev | ((8192 + 8 * dev + ev) << 32), ev % 2, 0])
    for k, c in enumerate(cmds):
        for i, word in enumerate(c):
            _w64(vm, CMDQ + 32 * k + 8 * i, word)
    vm.mmio_write(its + R.GITS_CWRITER, 8, 32 * len(cmds))
    for dev, ev in ((0, 1), (0, 5), (1, 2), (1, 7)):
        assert vm.signal_msi(dev, ev)
    vm.vcpus[1].set_one_reg(SVE_VLS, (1).to_bytes(8, "little") + bytes(56))      # vCPU 1: VQ 1 only
    vm.finalize_vcpus(KVM_ARM_VCPU_SVE)
    ids = [r for r in vm.vcpus[0].get_reg_list() if r != SVE_VLS]
    data = vm.get_one_regs(ids)
    col = 0
    for r in ids:
        size = 1 << ((r >> 52) & 0xF)
        if size > 8 or r in (FPSR, FPCR):
            data[:, col:col + size] = rng.integers(0, 256, (2, size), dtype=np.uint8)
        col += size
    vm.set_one_regs(ids, data)
    for v in vm.vcpus:
        v.set_one_reg(TIMER_CTL, 1)
        v.set_one_reg(TIMER_CVAL, 5000 + 1000 * v.id)
        v.set_one_reg(PTIMER_CTL, 1)
        v.set_one_reg(PTIMER_CVAL, 9000)
        a = (v.mpidr & 0xFFFFFF) << 32
        vm.set_device_attr(GRP_CPU_SYSREGS, a | ICC_PMR, 0xF0)
        vm.set_device_attr(GRP_CPU_SYSREGS, a | ICC_IGRPEN1, 1)
        vm.set_device_attr(GRP_CPU_SYSREGS, a | ICC_BPR1, 3)
    vm.advance(2000)
    for v in vm.vcpus:
        v.enter()
        v.exit()
    return vm


# ------------------------------------------------------------------ the format
class Base:
    """One valid snapshot, split into its parts."""

    def __init__(self, name: str, blob: bytes) -> None:
        self.name = name
        self.blob = blob
        magic, self.major, self.minor, self.flags, hlen, plen, self.crc = FIXED.unpack_from(blob, 0)
        assert magic == MAGIC
        self.header_bytes = blob[FIXED.size:FIXED.size + hlen]
        self.header = msgpack.unpackb(self.header_bytes, raw=False)
        self.payload = blob[FIXED.size + hlen:]
        assert len(self.payload) == plen
        self.zstd = bool(self.flags & FLAG_ZSTD)
        self.plain = _decompress(self.payload) if self.zstd else self.payload
        #: [start, end) of every array (and RAM) in the plain payload.
        self.extents = [(s["offset"], s["offset"] + s["nbytes"]) for s in self.header["sections"]]
        if self.header["ram"] is not None:
            self.extents.append((self.header["ram"]["offset"], self.header["ram"]["offset"]
                                 + self.header["ram"]["nbytes"]))


def _decompress(payload: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdDecompressor().decompress(payload)


def _compress(payload: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdCompressor(level=1).compress(payload)


def assemble(header_bytes: bytes, payload: bytes, magic: bytes = MAGIC, major: int = 1, minor: int = 0,
             flags: int = 0, hlen: int | None = None, plen: int | None = None, crc: int | None = None) -> bytes:
    """A snapshot from its parts; lengths and the CRC-32 computed unless given:
    zlib.crc32 over the fixed header with the CRC field 0, then every byte after it."""
    hlen = len(header_bytes) if hlen is None else hlen
    plen = len(payload) if plen is None else plen
    if crc is None:
        crc = zlib.crc32(FIXED.pack(magic, major, minor, flags, hlen, plen, 0))
        crc = zlib.crc32(payload, zlib.crc32(header_bytes, crc))
    return FIXED.pack(magic, major, minor, flags, hlen, plen, crc) + header_bytes + payload


def recrc(data: bytes) -> bytes:
    """``data`` with its CRC-32 recomputed over whatever its fixed header says."""
    if len(data) < FIXED.size:
        return data
    magic, major, minor, flags, hlen, plen, _ = FIXED.unpack_from(data, 0)
    crc = zlib.crc32(data[FIXED.size:], zlib.crc32(FIXED.pack(magic, major, minor, flags, hlen, plen, 0)))
    return FIXED.pack(magic, major, minor, flags, hlen, plen, crc) + data[FIXED.size:]


# ------------------------------------------------------------------ mutations
_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1
GARBAGE: list[Any] = [None, True, False, 0, 1, -1, 2, 3, 7, 64, 255, 256, 1 << 16, (1 << 31) - 1, 1 << 31,
                      1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, _U64_MAX, _I64_MIN, 1.5, -0.0, float("inf"),
                      float("nan"), "", "x", "u1", "u4", "u8", "<u4", "f8", "O", "ONE_REG", "DIST_REGS",
                      "fpsimd.regs", "vgic.dist_config", b"", b"\x00" * 8, [], [0], [1, 2, 3], [[1, 1, 0]],
                      [[0, 1 << 20, 0]], {}, {"a": 1}, {"offset": 0, "nbytes": 0}, [[[[[]]]]], [None] * 5]


def garbage(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value: a scalar of an awkward kind or a small nested structure."""
    r = rng.random()
    if r < 0.55 or depth > 3:
        return copy.deepcopy(rng.choice(GARBAGE))      # (never the list's own objects: no cycles)
    if r < 0.7:
        return rng.randrange(_I64_MIN, _U64_MAX + 1)
    if r < 0.8:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 24)))
    if r < 0.9:
        return [garbage(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(["name", "group", "ids", "shape", "offset", "nbytes", "x", "vm", "meta", ""]):
            garbage(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def int_variant(rng: random.Random, x: Any) -> Any:
    """An integer near ``x``, at a limit, or of another type."""
    x = x if type(x) is int else 0
    choice = rng.randrange(16)
    if choice == 0:
        return x + 1
    if choice == 1:
        return x - 1
    if choice == 2:
        return -x if x else -1
    if choice == 3:
        return x * 2 + 1
    if choice == 4:
        return x + (1 << 32)
    if choice == 5:
        return x ^ (1 << rng.randrange(64)) if 0 <= x <= _U64_MAX else 0
    if choice == 6:
        return rng.choice([0, -1, (1 << 63) - 1, 1 << 63, _U64_MAX, _I64_MIN, 1 << 40, 1 << 20])
    if choice == 7:
        return rng.randrange(0, 1 << 64)
    if choice == 8:
        return rng.randrange(0, 1 << 12)
    if choice == 9:
        return float(x)
    if choice == 10:
        return str(x)
    if choice == 11:
        return [x]
    if choice == 12:
        return bool(x & 1)
    if choice == 13:
        return None
    return garbage(rng)


def _clip(v: Any) -> Any:
    """Integers msgpack can carry (it has no wider ones)."""
    if type(v) is int and not _I64_MIN <= v <= _U64_MAX:
        return v & _U64_MAX
    return v


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _leaves(v, path + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


META_KEYS = ["nr_vcpus", "nr_irqs", "dist_base", "redist_base", "ram_base", "ram_size", "its", "its_base",
             "irqchip", "pri_bits", "pre_bits", "cntfrq", "sve", "nr_lrs", "lr_order", "its_max_ites",
             "timer_policy", "fp_policy", "host_sve", "sve_vqs"]
SPEC_KEYS = ["name", "group", "per_vcpu", "ids", "dtype", "shape", "offset", "nbytes"]
GROUPS = ["DIST_REGS", "REDIST_REGS", "CPU_SYSREGS", "LEVEL_INFO", "ITS_REGS", "KVM_ARM_VCPU_TIMER_CTRL", "ONE_REG"]


def mutate_header(rng: random.Random, h: dict, base: Base) -> str:
    """One edit of a decoded msgpack header, in place; returns its name."""
    secs = h.get("sections") if isinstance(h, dict) else None
    r = rng.random()
    if isinstance(secs, list) and secs and r < 0.5:
        k = rng.randrange(len(secs))
        spec = secs[k]
        if not isinstance(spec, dict):
            secs[k] = garbage(rng)
            return "section.garbage"
        what = rng.choice(["shape", "shape", "offset", "offset", "nbytes", "dtype", "ids", "ids", "ids",
                           "per_vcpu", "group", "name", "drop_key", "add_key", "drop", "dup", "swap",
                           "layout", "reshape", "retarget", "swap_names"])
        if what == "shape":
            shape = spec.get("shape")
            choice = rng.randrange(6)
            if choice == 0 and isinstance(shape, list) and shape:
                i = rng.randrange(len(shape))
                shape[i] = int_variant(rng, shape[i])
            elif choice == 1:
                spec["shape"] = shape[::-1] if isinstance(shape, list) else [1]
            elif choice == 2:
                spec["shape"] = [int(np.prod(shape))] if isinstance(shape, list) else []
            elif choice == 3:
                spec["shape"] = (shape or []) + [rng.choice([0, 1, 2, 1 << 39])]
            elif choice == 4:
                spec["shape"] = [rng.choice([0, 1, 2, 3, 512, 1 << 20, -1, 1 << 40]) for _ in range(rng.randrange(4))]
            else:
                spec["shape"] = garbage(rng)
        elif what in ("offset", "nbytes"):
            x = spec.get(what)
            choice = rng.randrange(5)
            if choice == 0:
                spec[what] = int_variant(rng, x)
            elif choice == 1 and type(x) is int:
                spec[what] = x + rng.choice([-16, -8, -4, -1, 1, 4, 8, 16])
            elif choice == 2:
                spec[what] = rng.choice([0, len(base.plain), len(base.plain) - 1, len(base.plain) + 1,
                                         rng.randrange(0, len(base.plain) + 1)])
            else:
                spec[what] = int_variant(rng, x)
            if rng.random() < 0.5 and type(spec.get("offset")) is int and type(spec.get("nbytes")) is int:
                # Keep the spec self-consistent so the array is built and the restore reached.
                dt = {"u1": 1, "u4": 4, "u8": 8}.get(spec.get("dtype"), 1)
                n = max(0, spec["nbytes"]) // dt
                if isinstance(spec.get("shape"), list) and len(spec["shape"]) == 2 and spec["shape"][0]:
                    rows = spec["shape"][0]
                    spec["shape"] = [rows, n // rows]
                    spec["nbytes"] = rows * (n // rows) * dt
                else:
                    spec["shape"] = [n]
                    spec["nbytes"] = n * dt
        elif what == "dtype":
            spec["dtype"] = rng.choice(["u1", "u4", "u8", "i4", "f8", "<u4", "U8", "", None, 4, ["u4"]])
            if rng.random() < 0.6 and spec["dtype"] in ("u1", "u4", "u8") and isinstance(spec.get("shape"), list):
                item = {"u1": 1, "u4": 4, "u8": 8}[spec["dtype"]]
                spec["nbytes"] = int(np.prod(spec["shape"], dtype=object)) * item
        elif what == "ids":
            runs = spec.get("ids")
            choice = rng.randrange(9)
            if choice == 0 and isinstance(runs, list) and runs and isinstance(runs[0], list) and len(runs[0]) == 3:
                i = rng.randrange(len(runs))
                j = rng.randrange(3)
                runs[i][j] = int_variant(rng, runs[i][j])
            elif choice == 1:
                spec["ids"] = [[rng.randrange(1 << 64), rng.choice([1 << 20, (1 << 20) + 1, 1 << 32, 1 << 62]),
                                rng.choice([0, 1, 1 << 31])]]
            elif choice == 2:
                spec["ids"] = [[-1, 1, 0]] if rng.random() < 0.5 else [[0, -5, 1]]
            elif choice == 3:
                spec["ids"] = [[x, 1, 0] for x in range(rng.choice([0, 1, 65, 1000]))]
            elif choice == 4:
                spec["ids"] = [[rng.randrange(1 << 64), rng.randrange(1, 64), rng.randrange(1 << 32)]]
            elif choice == 5 and isinstance(runs, list):
                spec["ids"] = runs + runs[: rng.randrange(1, 3)]
            elif choice == 6 and isinstance(runs, list):
                spec["ids"] = runs[:-1]
            elif choice == 7:
                spec["ids"] = [[_U64_MAX, 2, 1]] if rng.random() < 0.5 else [[1, 2, 3, 4]]
            else:
                spec["ids"] = garbage(rng)
        elif what == "per_vcpu":
            spec["per_vcpu"] = (not spec.get("per_vcpu")) if rng.random() < 0.7 else garbage(rng)
        elif what == "group":
            spec["group"] = rng.choice(GROUPS + ["", "ITS", None, 5])
        elif what == "name":
            other = secs[rng.randrange(len(secs))]
            spec["name"] = other.get("name") if isinstance(other, dict) and rng.random() < 0.6 else garbage(rng)
        elif what == "drop_key":
            spec.pop(rng.choice(SPEC_KEYS), None)
        elif what == "add_key":
            spec[rng.choice(["extra", "x", "offset2", "ids"])] = garbage(rng)
        elif what == "drop":
            del secs[k]
        elif what == "dup":
            secs.insert(rng.randrange(len(secs) + 1), copy.deepcopy(spec))
        elif what == "swap":
            j = rng.randrange(len(secs))
            other = secs[j]
            if isinstance(other, dict):
                key = rng.choice(SPEC_KEYS)
                spec[key], other[key] = other.get(key), spec.get(key)
        elif what == "reshape":
            # VM-wide <-> per vCPU with the same bytes (a layout that decodes).
            shape = spec.get("shape")
            if isinstance(shape, list) and all(type(x) is int for x in shape):
                if len(shape) == 2:
                    spec["shape"], spec["per_vcpu"] = [shape[0] * shape[1]], False
                elif len(shape) == 1 and shape[0] % 2 == 0:
                    spec["shape"], spec["per_vcpu"] = [2, shape[0] // 2], True
                else:
                    spec["shape"], spec["per_vcpu"] = [1] + shape, True
        elif what == "retarget":
            # The same number of registers, other IDs: shifted runs, or runs
            # of another section.
            runs = spec.get("ids")
            if isinstance(runs, list) and all(isinstance(x, list) and len(x) == 3 for x in runs):
                if rng.random() < 0.5:
                    spec["ids"] = [[max(0, x[0] + rng.choice([-8, -4, -1, 1, 4, 8, 0x10000, 1 << 32])), x[1], x[2]]
                                   for x in runs]
                else:
                    i = rng.randrange(len(runs))
                    runs[i] = [rng.choice([0, 4, 0x80, 0x6000, 0x10080, 0xC230, 0xC664, 0x603000000013DF19,
                                           0x6080000000150000, 0x60200000001000D4, 0x606000000015FFFF,
                                           rng.randrange(1 << 64)]), runs[i][1], runs[i][2]]
        elif what == "swap_names":
            j = rng.randrange(len(secs))
            if isinstance(secs[j], dict):
                spec["name"], secs[j]["name"] = secs[j].get("name"), spec.get("name")
        else:
            # Another section's array layout under this section's registers.
            other = secs[rng.randrange(len(secs))]
            if isinstance(other, dict):
                for key in ("dtype", "shape", "offset", "nbytes", "per_vcpu"):
                    if key in other:
                        spec[key] = copy.deepcopy(other[key])
        return "section." + what
    meta = h.get("meta") if isinstance(h, dict) else None
    if isinstance(meta, dict) and r < 0.8:
        g = meta.get("vm")
        what = rng.choice(["vm", "vm", "vm", "nr_vcpus", "sve_vqs", "ram_size", "format", "host", "drop", "meta"])
        if not isinstance(g, dict):
            meta["vm"] = garbage(rng)
            return "meta.garbage"
        if what == "vm":
            key = rng.choice(META_KEYS)
            g[key] = int_variant(rng, g.get(key)) if type(g.get(key)) is int else (
                (not g.get(key)) if isinstance(g.get(key), bool) and rng.random() < 0.7 else garbage(rng))
        elif what == "nr_vcpus":
            g["nr_vcpus"] = rng.choice([0, 1, 3, 4, 511, 512, 513, 1 << 20, 1 << 63, -1, _U64_MAX, "2", 2.0, True])
        elif what == "sve_vqs":
            g["sve_vqs"] = rng.choice([[], [0], [17], [1, 1], [2], [1, 2, 3], list(range(1, 17)), [1 << 63],
                                       [-1], "x", [[1]], [1.0], None, [True]])
        elif what == "ram_size":
            g["ram_size"] = rng.choice([0, 1, RAM_SIZE - 1, RAM_SIZE + 1, 2 * RAM_SIZE, 1 << 32, 1 << 40,
                                        1 << 51, (1 << 52) - g.get("ram_base", 0) if type(g.get("ram_base")) is int
                                        else 0, _U64_MAX])
            if rng.random() < 0.3:
                g["ram_base"] = rng.choice([0, 1 << 32, 1 << 48])
        elif what == "format":
            meta["format"] = rng.choice([[1, 0], [1, 99], [2, 0], [0, 0], [1], [1, 0, 0], "1.0", None, [-1, 0]])
        elif what == "host":
            host = meta.get("host")
            if isinstance(host, dict):
                key = rng.choice(["CNTPCT_EL0", "counter_offset"])
                if rng.random() < 0.2:
                    host.pop(key, None)
                else:
                    host[key] = rng.choice([None, 0, -1, 1 << 63, _U64_MAX, rng.randrange(1 << 64), "0", 1.0])
            else:
                meta["host"] = garbage(rng)
        elif what == "drop":
            if rng.random() < 0.5:
                g.pop(rng.choice(META_KEYS), None)
            else:
                meta.pop(rng.choice(["format", "vm", "host", "vgic", "backend"]), None)
        else:
            meta[rng.choice(["vm", "host", "format", "extra"])] = garbage(rng)
        return "meta." + what
    if isinstance(h, dict) and r < 0.9:
        what = rng.choice(["ram", "ram", "drop", "extra", "garbage"])
        if what == "ram":
            ram = h.get("ram")
            if isinstance(ram, dict) and rng.random() < 0.7:
                key = rng.choice(["offset", "nbytes", "dtype", "shape"])
                ram[key] = int_variant(rng, ram.get(key))
            elif ram is None:
                h["ram"] = {"offset": rng.choice([0, 16, len(base.plain)]), "nbytes": rng.choice([0, RAM_SIZE, 16])}
            else:
                h["ram"] = rng.choice([None, garbage(rng)])
        elif what == "drop":
            h.pop(rng.choice(["meta", "sections", "ram"]), None)
        elif what == "extra":
            h[rng.choice(["extra", "x", "y"])] = garbage(rng)
        else:
            h[rng.choice(["meta", "sections", "ram"])] = garbage(rng)
        return "top." + what
    if r < 0.95:
        # A key of any map renamed (one character changed, or a suffix).
        maps = [p for p in _leaves(h) if isinstance(_get(h, p), dict) and _get(h, p)]
        if maps:
            m = _get(h, rng.choice(maps))
            key = rng.choice(list(m))
            if isinstance(key, str) and key and rng.random() < 0.7:
                i = rng.randrange(len(key))
                new = key[:i] + chr(ord(key[i]) ^ (1 << rng.randrange(5))) + key[i + 1:]
            else:
                new = f"{key}_"
            m[new] = m.pop(key)
            return "rename"
    # Any node at all replaced by garbage.
    paths = _leaves(h)
    path = rng.choice(paths)
    value = _get(h, path)
    _set(h, path, int_variant(rng, value) if type(value) is int else garbage(rng))
    return "anywhere"


def _edit(rng: random.Random, h: dict, base: Base) -> str:
    """:func:`mutate_header`; an edit that trips over an earlier edit's
    garbage (the header is no longer the shape it expects) replaces a node
    with garbage instead."""
    try:
        return mutate_header(rng, h, base)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError, OverflowError):
        path = rng.choice(_leaves(h))
        _set(h, path, garbage(rng))
        return "anywhere"


def _pack(obj: Any) -> bytes:
    def fix(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        return _clip(o)
    return msgpack.packb(fix(obj), use_bin_type=True)


def raw_header(rng: random.Random, base: Base) -> bytes:
    """msgpack bytes no packer writes: deep nesting, truncation, trailing bytes, bad types."""
    choice = rng.randrange(8)
    if choice == 0:
        depth = rng.choice([10, 100, 1000, 5000, 100_000])
        return b"\x91" * depth + b"\xc0"
    if choice == 1:
        return base.header_bytes[:rng.randrange(len(base.header_bytes))]
    if choice == 2:
        return base.header_bytes + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))
    if choice == 3:
        # A map claiming 2^32-1 entries, an array of 2^32-1, a str of 2^32-1 bytes.
        return rng.choice([b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                           b"\xc6\xff\xff\xff\xff"]) + base.header_bytes[:rng.randrange(64)]
    if choice == 4:
        return _pack(garbage(rng))
    if choice == 5:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
    if choice == 6:
        # Ext types and timestamps msgpack may or may not decode.
        return rng.choice([b"\xd4\x01\x00", b"\xd6\xff\x00\x00\x00\x00", b"\xc7\x00\x05", b"\xc1"])
    b = bytearray(base.header_bytes)
    for _ in range(rng.randrange(1, 8)):
        b[rng.randrange(len(b))] = rng.getrandbits(8)
    return bytes(b)


def _truncation_points(base: Base, rng: random.Random) -> list[int]:
    hlen = len(base.header_bytes)
    pts = [0, 1, 7, 8, 9, 10, 11, 12, 15, 16, 20, 24, 31, 32, 35, 36, 39, 40, 41,
           FIXED.size + hlen - 1, FIXED.size + hlen, FIXED.size + hlen + 1, len(base.blob) - 1]
    if not base.zstd:
        for a, b in base.extents:
            pts += [FIXED.size + hlen + a, FIXED.size + hlen + b, FIXED.size + hlen + b - 1]
    pts.append(rng.randrange(len(base.blob)))
    return [p for p in pts if 0 <= p < len(base.blob)]


def mutate(rng: random.Random, bases: list[Base], weights: list[float]) -> tuple[str, bytes]:
    """One fuzz input: (kind, bytes)."""
    base = rng.choices(bases, weights)[0]
    blob = base.blob
    r = rng.random()
    z = "zstd." if base.zstd else ""
    if r < 0.06:
        p = rng.choice(_truncation_points(base, rng))
        data = blob[:p]
        if rng.random() < 0.3:
            data = recrc(data)
        return z + "truncate", data
    if r < 0.08:
        return z + "extend", blob + bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 16, 100])))
    if r < 0.16:
        b = bytearray(blob)
        zone = rng.random()
        hlen = len(base.header_bytes)
        if zone < 0.3:
            pos = rng.randrange(FIXED.size)
        elif zone < 0.6:
            pos = FIXED.size + rng.randrange(hlen)
        else:
            pos = rng.randrange(FIXED.size + hlen, len(b))
        b[pos] ^= 1 << rng.randrange(8)
        return z + "bitflip", bytes(b)
    if r < 0.22:
        b = bytearray(blob)
        for _ in range(rng.randrange(2, 65)):
            pos = rng.randrange(len(b)) if rng.random() < 0.5 else rng.randrange(min(len(b), 2048))
            b[pos] ^= 1 << rng.randrange(8)
        if rng.random() < 0.5:
            return z + "multiflip.crc", recrc(bytes(b))
        return z + "multiflip", bytes(b)
    if r < 0.25:
        n = rng.choice([0, 1, 8, 39, 40, 41, 64, 100, 1000, rng.randrange(4096)])
        return "random", bytes(rng.getrandbits(8) for _ in range(n))
    if r < 0.30:
        body = _pack(garbage(rng)) if rng.random() < 0.5 else bytes(rng.getrandbits(8)
                                                                    for _ in range(rng.randrange(0, 512)))
        split = rng.randrange(len(body) + 1)
        hdr, pl = body[:split], body[split:]
        major = rng.choice([1, 1, 1, 0, 2, 0xFFFF])
        flags = rng.choice([0, 0, 1, 2, 0xFFFFFFFF])
        crc = None if rng.random() < 0.8 else rng.getrandbits(32)
        return "random_header", assemble(hdr, pl, major=major, minor=rng.getrandbits(16), flags=flags, crc=crc)
    if r < 0.36:
        magic, major, minor, flags, hlen, plen = MAGIC, base.major, base.minor, base.flags, None, None
        what = rng.randrange(7)
        if what == 0:
            major = rng.choice([0, 2, 3, 0xFFFF])
        elif what == 1:
            minor = rng.choice([1, 99, 0xFFFF])
        elif what == 2:
            flags = rng.choice([0, 1, 2, 3, 0x80000000, 0xFFFFFFFF])
        elif what == 3:
            hlen = len(base.header_bytes) + rng.choice([-len(base.header_bytes), -1, 1, 16, 1 << 32, (1 << 64) - 1])
            hlen &= _U64_MAX
        elif what == 4:
            plen = (len(base.payload) + rng.choice([-1, 1, -len(base.payload), 1 << 40])) & _U64_MAX
        elif what == 5:
            hlen = len(base.header_bytes) + 8
            plen = len(base.payload) - 8
        else:
            magic = b"VGICSNAp" if rng.random() < 0.5 else b"\x00" * 8
        data = assemble(base.header_bytes, base.payload, magic, major, minor, flags, hlen, plen)
        return z + "fixed_fields", data
    if r < 0.80:
        h = msgpack.unpackb(base.header_bytes, raw=False)
        edits = [_edit(rng, h, base) for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4]))]
        payload = base.payload
        if rng.random() < 0.1 and not base.zstd:
            payload = payload + bytes(rng.randrange(0, 64))
        data = assemble(_pack(h), payload, major=base.major, minor=base.minor, flags=base.flags)
        return z + "header_fields." + edits[0].split(".")[0], data
    if r < 0.84:
        return z + "header_raw", assemble(raw_header(rng, base), base.payload, flags=base.flags)
    # Payload: register values and RAM bytes, CRC fixed.
    plain = bytearray(base.plain)
    a, b = rng.choice(base.extents)
    if b > a:
        how = rng.randrange(4)
        if how == 0:
            for _ in range(rng.randrange(1, 9)):
                plain[rng.randrange(a, b)] = rng.getrandbits(8)
        elif how == 1:
            fill = rng.choice([0x00, 0xFF, 0x80, 0x01])
            plain[a:b] = bytes([fill]) * (b - a)
        elif how == 2:
            plain[a:b] = bytes(rng.getrandbits(8) for _ in range(b - a)) if b - a <= 1 << 16 else plain[a:b]
        else:
            pos = rng.randrange(a, b)
            plain[pos] ^= 1 << rng.randrange(8)
    if base.zstd:
        if rng.random() < 0.5:
            payload = _compress(bytes(plain))
        else:
            c = bytearray(base.payload)
            for _ in range(rng.randrange(1, 4)):
                c[rng.randrange(len(c))] ^= 1 << rng.randrange(8)
            payload = bytes(c) if rng.random() < 0.8 else bytes(c[:rng.randrange(len(c))])
    else:
        payload = bytes(plain)
    return z + "payload", assemble(base.header_bytes, payload, major=base.major, minor=base.minor, flags=base.flags)


# ------------------------------------------------------------------ known bugs
#: Open bugs the fuzz finds, each shown by a strict xfail test at the end of
#: this file: name -> predicate(exception, snapshot).  A restore failing so
#: is counted under the bug's name (the target still checked) rather than
#: failing the run, so that the fuzz goes on looking for other failures.  A
#: fixed bug's xfail turns into an XPASS (a failure, strict): then its entry
#: here goes and its test becomes a regression test.  Empty: the three the
#: fuzz found (docs/snapshot-fuzz.md) were fixed in 1c37e1f.
KNOWN: dict[str, Any] = {}


def known_bug(exc: BaseException, snap: vgic.Snapshot) -> str | None:
    return next((name for name, match in KNOWN.items() if match(exc, snap)), None)


# ------------------------------------------------------------------ the harness
class Fuzz:
    """The target VM, the bases, the counts, and the checks of one input."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.target = guest_vm()
        vm = self.target
        s_ram, s_noram = vm.save(), vm.save(ram=False)
        other = vgic.VM(nr_vcpus=1, nr_irqs=96, ram_size=64 << 10, backend=vm.backend)
        other.set_irq_level(40, True)
        self.bases = [Base("noram", s_noram.to_bytes()), Base("ram", s_ram.to_bytes()),
                      Base("noram.zstd", s_noram.to_bytes("zstd")), Base("ram.zstd", s_ram.to_bytes("zstd")),
                      Base("other", other.save().to_bytes())]
        self.weights = [0.55, 0.12, 0.12, 0.08, 0.13]
        self.state = vm.state()
        self.memory = vm.memory.copy()
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.failures: list[str] = []
        self.nr_failures = 0
        self.slowest = (0.0, "")
        self.refused_restores = 0
        self.state_checks = 0
        self.known: Counter = Counter()

    def reset(self) -> None:
        """The target back to the baseline after a restore that succeeded."""
        self.target.load_state(self.state)
        self.target.memory[:] = self.memory

    def fail(self, n: int, kind: str, msg: str) -> None:
        self.nr_failures += 1
        if len(self.failures) < 1000:
            self.failures.append(f"VGIC_FUZZ_SEED={self.seed:#x} input {n} ({kind}): {msg}")

    def one(self, n: int) -> None:
        kind, data = mutate(self.rng, self.bases, self.weights)
        self.one_input(n, kind, data)

    def one_input(self, n: int, kind: str, data: bytes) -> None:
        """The checks of one input (see the module docstring)."""
        c = self.counts[kind]
        c["inputs"] += 1
        t0 = time.perf_counter()
        try:
            snap = vgic.Snapshot.from_bytes(data)
        except vgic.SnapshotError:
            c["decode_refused"] += 1
            snap = None
        except Exception as exc:            # what the fuzz is for
            self.fail(n, kind, f"from_bytes raised {type(exc).__name__}: {exc}")
            snap = None
        if snap is not None:
            c["decoded"] += 1
            self.restore_onto(n, kind, c, snap)
            self.restore_new(n, kind, c, snap)
        if not np.array_equal(self.target.memory, self.memory):
            self.fail(n, kind, "the target's memory changed")
            self.target.memory[:] = self.memory
        dt = time.perf_counter() - t0
        if dt > self.slowest[0]:
            self.slowest = (dt, f"input {n} ({kind})")
        if dt > INPUT_BUDGET:
            self.fail(n, kind, f"took {dt:.1f}s (budget {INPUT_BUDGET}s)")

    def restore_onto(self, n: int, kind: str, c: Counter, snap: vgic.Snapshot) -> None:
        try:
            self.target.restore(snap)
        except vgic.SnapshotError:
            c["onto_refused"] += 1
            self.refused_restores += 1
            if self.refused_restores % STATE_EVERY == 1:
                self.state_checks += 1
                d = diff(self.state, self.target.state(), limit=3)
                if d:
                    self.fail(n, kind, "target.restore refused but changed the state: " + "; ".join(d))
                    self.reset()
            return
        except Exception as exc:
            bug = known_bug(exc, snap)
            if bug is None:
                self.fail(n, kind, f"target.restore raised {type(exc).__name__}: {exc}")
                self.reset()
                return
            c["onto_known"] += 1
            self.known[bug] += 1
            d = diff(self.state, self.target.state(), limit=3)
            if d:
                self.fail(n, kind, f"target.restore failed ({bug}) and changed the state: " + "; ".join(d))
                self.reset()
            return
        c["onto_ok"] += 1
        self.reset()

    def restore_new(self, n: int, kind: str, c: Counter, snap: vgic.Snapshot) -> None:
        try:
            vgic.VM.restore(snap, backend=self.target.backend)
        except vgic.SnapshotError:
            c["new_refused"] += 1
            return
        except Exception as exc:
            bug = known_bug(exc, snap)
            if bug is None:
                self.fail(n, kind, f"VM.restore raised {type(exc).__name__}: {exc}")
            else:
                c["new_known"] += 1
                self.known[bug] += 1
            return
        c["new_ok"] += 1

    def run(self, total: int) -> float:
        t0 = time.perf_counter()
        last = 0.0
        try:
            for n in range(total):
                now = time.monotonic()
                if now - last > 10:
                    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
                    last = now
                self.one(n)
        finally:
            faulthandler.cancel_dump_traceback_later()
        return time.perf_counter() - t0

    def summary(self, seconds: float) -> dict[str, Any]:
        fields = ("inputs", "decode_refused", "decoded", "onto_ok", "onto_refused", "onto_known", "new_ok",
                  "new_refused", "new_known")
        groups: dict[str, Counter] = defaultdict(Counter)
        for kind, c in self.counts.items():
            groups[_group(kind)].update(c)
        return {"seed": self.seed, "backend": self.target.backend, "seconds": round(seconds, 1),
                "inputs": sum(c["inputs"] for c in self.counts.values()),
                "failures": self.nr_failures, "first_failures": self.failures[:20],
                "known_bugs": dict(self.known),
                "state_checks": self.state_checks, "slowest": [round(self.slowest[0], 3), self.slowest[1]],
                "by_kind": {k: {f: groups[k][f] for f in fields} for k in sorted(groups)},
                "by_edit": {k: {f: c[f] for f in fields} for k, c in sorted(self.counts.items())}}


def _group(kind: str) -> str:
    """A kind without the header edit's name (``header_fields.section`` -> ``header_fields``)."""
    parts = kind.split(".")
    if parts[0] == "zstd":
        return "zstd." + parts[1]
    return parts[0]


def _table(summary: dict[str, Any]) -> str:
    lines = [f"{'kind':24} {'inputs':>9} {'refused':>9} {'decoded':>9} {'onto ok':>8} {'onto ref':>9} "
             f"{'known':>6} {'new ok':>8} {'new ref':>8} {'known':>6}"]
    for k, c in summary["by_kind"].items():
        lines.append(f"{k:24} {c['inputs']:9} {c['decode_refused']:9} {c['decoded']:9} {c['onto_ok']:8} "
                     f"{c['onto_refused']:9} {c['onto_known']:6} {c['new_ok']:8} {c['new_refused']:8} "
                     f"{c['new_known']:6}")
    for bug, n in summary["known_bugs"].items():
        lines.append(f"known bug ({n} restores): {bug}")
    return "\n".join(lines)


# ====================================================================== the tests
@pytest.fixture(scope="module")
def fuzz() -> Fuzz:
    return Fuzz(SEED)


def test_bases_are_valid_and_rebuilt_exactly(fuzz):
    # The harness's own premise: each base decodes and restores (onto the
    # target and as a new VM), and re-assembling an unchanged header with a
    # recomputed CRC-32 (zlib.crc32 over the fixed header with CRC 0, then
    # every following byte) gives the very bytes vgic wrote - so a mutation
    # that recomputes it reaches the msgpack header and the sections.
    for base in fuzz.bases:
        again = assemble(_pack(msgpack.unpackb(base.header_bytes, raw=False)), base.payload, major=base.major,
                         minor=base.minor, flags=base.flags)
        assert again == base.blob, base.name
        assert recrc(base.blob) == base.blob
        snap = vgic.Snapshot.from_bytes(base.blob)
        vgic.VM.restore(snap, backend=fuzz.target.backend)
        if base.name != "other":
            fuzz.target.restore(snap)
            fuzz.reset()
        else:
            with pytest.raises(vgic.SnapshotError):
                fuzz.target.restore(snap)
    assert not diff(fuzz.state, fuzz.target.state(), limit=1)


def test_every_truncation_is_refused(fuzz):
    # Every prefix of a snapshot without RAM (and of its zstd form), and
    # every prefix around the boundaries of one with RAM, is refused with
    # SnapshotError: the fixed header records both lengths.
    for base in fuzz.bases:
        ends = range(len(base.blob)) if len(base.blob) < 1 << 16 else sorted(
            set(_truncation_points(base, random.Random(1))) | set(range(0, 4096)))
        for p in ends:
            with pytest.raises(vgic.SnapshotError):
                vgic.Snapshot.from_bytes(base.blob[:p])


def test_every_header_bit_flip_is_refused_or_restores(fuzz):
    # Every single bit of the fixed header and of the msgpack header of the
    # snapshot without RAM flipped, blind (the CRC-32 must refuse it) and
    # then with the CRC recomputed (the reader and restore must refuse it or
    # accept it - SnapshotError or success, nothing else, target unchanged).
    # The fixed header's 4 padding bytes are the exception: the reader
    # checks the CRC of the header as it packs it again (padding zero), so a
    # flip there reads as the very same snapshot.
    base = fuzz.bases[0]
    end = FIXED.size + len(base.header_bytes)
    step = 1 if COUNT >= 100_000 else 3
    padding = range(FIXED.size - 4, FIXED.size)
    original = vgic.Snapshot.from_bytes(base.blob)
    for pos in range(0, end, step):
        for bit in range(8):
            b = bytearray(base.blob)
            b[pos] ^= 1 << bit
            if pos in padding:
                assert not vgic.Snapshot.from_bytes(bytes(b)).diff(original)
                continue
            with pytest.raises(vgic.SnapshotError):
                vgic.Snapshot.from_bytes(bytes(b))
            if pos < FIXED.size or bit % 4 == 0:
                fuzz.one_input(pos * 8 + bit, "header_bitflip.crc", recrc(bytes(b)))
    assert not fuzz.failures, "\n".join(fuzz.failures[:10])


def test_snapshot_fuzz(fuzz):
    """VGIC_FUZZ_SNAPSHOTS mutated snapshot byte strings (see the module
    docstring): from_bytes returns a Snapshot or raises SnapshotError,
    target.restore and VM.restore succeed or raise SnapshotError, a refused
    restore leaves the target's memory (every input) and state (a sample)
    unchanged, and no input takes more than INPUT_BUDGET seconds."""
    fuzz.counts.clear()
    fuzz.known.clear()
    fuzz.failures.clear()
    fuzz.nr_failures = 0
    seconds = fuzz.run(COUNT)
    summary = fuzz.summary(seconds)
    print(f"\nsnapshot fuzz: seed {SEED:#x}, {summary['inputs']} inputs on {summary['backend']} in {seconds:.1f}s, "
          f"{summary['failures']} failures, {summary['state_checks']} state checks, slowest input "
          f"{summary['slowest'][0]:.3f}s ({summary['slowest'][1]})\n" + _table(summary))
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump(summary, f, indent=1)
    assert summary["inputs"] == COUNT
    assert not fuzz.failures, "\n".join(fuzz.failures[:20])
    # The mix reached what it is for: the msgpack header and the restores.
    total = Counter()
    for c in summary["by_kind"].values():
        total.update(c)
    assert total["decoded"] > COUNT // 5 and total["onto_ok"] and total["onto_refused"] and total["new_ok"]


# ------------------------------------------------------------ zstd expansion
def _rle_bomb(content: bytes, extra: int) -> bytes:
    """A zstd frame (RFC 8878): ``content`` as a raw block, then ``extra``
    zero bytes as RLE blocks of 128 KiB (4 bytes each), the frame content
    size declared - about 32768 times its size when decompressed."""
    total = len(content) + extra
    out = struct.pack("<I", 0xFD2FB528) + bytes([(3 << 6) | (1 << 5)]) + struct.pack("<Q", total)
    out += (len(content) << 3).to_bytes(3, "little") + content
    block = 128 << 10
    n = extra // block
    for i in range(n):
        out += ((block << 3) | (1 << 1) | (i == n - 1)).to_bytes(3, "little") + b"\0"
    return out


def refused(fuzz: Fuzz, data: bytes) -> None:
    """``data`` is refused with SnapshotError - when read, or else by both
    restores, the target unchanged."""
    try:
        snap = vgic.Snapshot.from_bytes(data)
    except vgic.SnapshotError:
        return
    try:
        with pytest.raises(vgic.SnapshotError):
            fuzz.target.restore(snap)
        assert not diff(fuzz.state, fuzz.target.state(), limit=1)
        assert np.array_equal(fuzz.target.memory, fuzz.memory)
    finally:
        fuzz.reset()
    with pytest.raises(vgic.SnapshotError):
        vgic.VM.restore(snap, backend=fuzz.target.backend)


# Was a bug (a strict xfail until 1c37e1f fixed it): Snapshot.from_bytes
# (vgic/snapshot.py _decode) decompressed a zstd payload with
# max_output_size=1 << 40 before looking at what the header needs: a 28 KB
# file whose frame declares 256 MiB made it allocate and fill 256 MiB (a
# 1 MiB file: 32 GiB).
def test_zstd_payload_is_bounded_by_its_header(fuzz):
    # The rule: never a crash or hang.  The header says how many payload
    # bytes the sections and RAM use; a compressed payload that expands far
    # beyond them must be refused without expanding it all.
    base = fuzz.bases[0]
    data = assemble(base.header_bytes, _rle_bomb(base.plain, 256 << 20), flags=FLAG_ZSTD)
    assert len(data) < 64 << 10
    tracemalloc.start()
    try:
        try:
            vgic.Snapshot.from_bytes(data)
        except vgic.SnapshotError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"reading a {len(data)}-byte snapshot took {peak >> 20} MiB"


# Was a bug (a strict xfail until 1c37e1f fixed it): _check_meta accepted a
# meta.host without the 'counter_offset' key (h.get(...) is None passed),
# then apply() read host['counter_offset']: target.restore and VM.restore
# raised KeyError instead of SnapshotError (1,938 restores in the 10^6 run).
def test_host_without_counter_offset_is_snapshot_error(fuzz):
    # The SnapshotError contract (vgic/errors.py): a snapshot that cannot be
    # restored raises SnapshotError and leaves the target unchanged.  The
    # fuzz found it by a one-bit flip in the key's name.
    base = fuzz.bases[0]
    h = msgpack.unpackb(base.header_bytes, raw=False)
    del h["meta"]["host"]["counter_offset"]
    refused(fuzz, assemble(_pack(h), base.payload))


# Was a bug (a strict xfail until 1c37e1f fixed it): _check_sections checked a
# section's dtype against its group but not its group against its name.
# vgic.cpu_sysregs relabelled ITS_REGS or KVM_ARM_VCPU_TIMER_CTRL (u8, as
# CPU_SYSREGS) passed, then apply()'s put_vcpus looked the group up in
# _GROUP_IDS: KeyError.  vgic.dist_config relabelled CPU_SYSREGS with u8
# values passed, then apply() wrote them as DIST_REGS: ValueError (values
# wider than 32 bits; input 975,464 of the 10^6 run).  Relabelled to another
# 32-bit group a section was restored into other registers, successfully.
@pytest.mark.parametrize("name,group", [("vgic.cpu_sysregs", "ITS_REGS"),
                                        ("vgic.cpu_sysregs", "KVM_ARM_VCPU_TIMER_CTRL"),
                                        ("vgic.dist_config", "CPU_SYSREGS"),
                                        ("vgic.dist_config", "REDIST_REGS"),
                                        ("vgic.redist_config", "DIST_REGS"),
                                        ("vgic.spi_levels", "DIST_REGS")])
def test_section_group_must_match_its_name(fuzz, name, group):
    # The SnapshotError contract; STYLE.md: "A snapshot names every register
    # (frame, offset or sysreg encoding, vCPU by MPIDR) ...; restore
    # validates all of it before touching state" - the group is part of a
    # register's name.
    base = fuzz.bases[0]
    h = msgpack.unpackb(base.header_bytes, raw=False)
    spec = next(x for x in h["sections"] if x["name"] == name)
    spec["group"] = group
    if group == "CPU_SYSREGS":
        # u8 values, here the bytes of the FP registers (wider than 32 bits).
        fp = next(x for x in h["sections"] if x["name"] == "fpsimd.regs")
        spec.update(dtype="u8", nbytes=8 * spec["shape"][0], offset=fp["offset"] + 512)
    refused(fuzz, assemble(_pack(h), base.payload))
