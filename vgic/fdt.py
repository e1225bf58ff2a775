"""Flattened device trees: a small writer and reader of the DTB format.

A guest booted by :mod:`vgic.run` learns where its RAM, GIC, ITS, timer
PPIs, UART and PSCI are from a device tree in memory, as under QEMU's
``virt`` board.  This module builds one without ``dtc``: a :class:`Node` tree
encoded to the flattened format of the Devicetree Specification v0.4 §5
(big-endian header, memory reservation block, structure block of
FDT_BEGIN_NODE / FDT_PROP / FDT_END_NODE / FDT_END tokens, strings block),
version 17, last compatible version 16.  :func:`parse` reads a blob back
into nodes (for tests, and for a ``--dtb`` given by the user).

Property values are written as the specification's value types: ``int`` is
one ``<u32>`` cell, a list of ints is a ``<prop-encoded-array>`` of cells, a
``str`` a NUL-terminated string, a list of ``str`` a ``<stringlist>``,
``bytes`` as is, ``True`` an empty property.  :func:`cells` packs 64-bit
addresses and sizes into 1 or 2 cells each as ``#address-cells`` /
``#size-cells`` say.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16
#: magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
#: last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct.
_HEADER = struct.Struct(">10I")

PropValue = int | list[int] | str | list[str] | bytes | bool


class FdtError(ValueError):
    """A blob that is not a well-formed flattened device tree."""


@dataclass
class Node:
    """One device-tree node: its name (``unit@address``), its properties in
    order, its children in order."""

    name: str
    props: dict[str, PropValue] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str) -> Node:
        """The child called ``name``; KeyError if there is none."""
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(f"{self.name or '/'} has no child {name!r}")

    def add(self, name: str, props: dict[str, PropValue] | None = None) -> Node:
        """Append a child ``name`` with ``props`` (names as written in the
        tree: ``device_type``, ``#address-cells``) and return it."""
        node = Node(name, dict(props or {}))
        self.children.append(node)
        return node

    def walk(self, path: str = "") -> list[tuple[str, Node]]:
        """Every node below and including this one with its path, depth
        first (without recursion: a parsed tree may be deep)."""
        out: list[tuple[str, Node]] = []
        todo: list[tuple[str, Node]] = [(path, self)]
        while todo:
            parent, node = todo.pop()
            here = "/" if not node.name else (parent.rstrip("/") + "/" + node.name)
            out.append((here, node))
            todo.extend((here, c) for c in reversed(node.children))
        return out

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {len(self.props)} properties, {len(self.children)} children)"


def cells(values: list[int], widths: list[int]) -> list[int]:
    """Pack ``values`` into 32-bit cells, value *i* taking ``widths[i]``
    cells (1 or 2), most significant cell first; ValueError if one does not fit."""
    if len(values) != len(widths):
        raise ValueError(f"{len(values)} values for {len(widths)} widths")
    out: list[int] = []
    for v, w in zip(values, widths):
        if w not in (1, 2) or not 0 <= v < 1 << (32 * w):
            raise ValueError(f"{v:#x} does not fit in {w} cell(s)")
        if w == 2:
            out.append(v >> 32)
        out.append(v & 0xFFFF_FFFF)
    return out


def encode_value(value: PropValue) -> bytes:
    """The bytes of a property value (see the module docstring)."""
    if value is True:
        return b""
    if isinstance(value, bool):
        raise TypeError("a property is present (True) or left out, never False")
    if isinstance(value, int):
        value = [value]
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return b"".join(s.encode() + b"\0" for s in value)  # type: ignore[union-attr]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        for v in value:
            if not 0 <= v <= 0xFFFF_FFFF:  # type: ignore[operator]
                raise ValueError(f"cell {v!r} is not a 32-bit unsigned value")
        return struct.pack(f">{len(value)}I", *value)
    raise TypeError(f"cannot encode a property value of {value!r}")


def _pad4(b: bytearray) -> None:
    b.extend(b"\0" * (-len(b) % 4))


def build(root: Node, *, boot_cpuid: int = 0, reserve: list[tuple[int, int]] | None = None) -> bytes:
    """The flattened blob of the tree under ``root`` (whose name is ""),
    with ``reserve`` (address, size) entries in its memory reservation block."""
    if root.name:
        raise ValueError(f"the root node's name is empty, not {root.name!r}")
    strings = bytearray()
    offsets: dict[str, int] = {}
    body = bytearray()

    def string_off(name: str) -> int:
        if name not in offsets:
            offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return offsets[name]

    def emit(node: Node) -> None:
        if "/" in node.name or "\0" in node.name:
            raise ValueError(f"node name {node.name!r} has a '/' or a NUL")
        body.extend(struct.pack(">I", FDT_BEGIN_NODE))
        body.extend(node.name.encode() + b"\0")
        _pad4(body)
        for key, value in node.props.items():
            data = encode_value(value)
            body.extend(struct.pack(">III", FDT_PROP, len(data), string_off(key)))
            body.extend(data)
            _pad4(body)
        for c in node.children:
            emit(c)
        body.extend(struct.pack(">I", FDT_END_NODE))

    emit(root)
    body.extend(struct.pack(">I", FDT_END))
    rsv = b"".join(struct.pack(">QQ", a, s) for a, s in (reserve or [])) + struct.pack(">QQ", 0, 0)
    off_rsv = _HEADER.size + (-_HEADER.size % 8)
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(body)
    total = off_strings + len(strings)
    header = _HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsv, FDT_VERSION,
                          FDT_LAST_COMP_VERSION, boot_cpuid, len(strings), len(body))
    out = bytearray(header)
    out.extend(b"\0" * (off_rsv - len(out)))
    out.extend(rsv)
    out.extend(body)
    out.extend(strings)
    return bytes(out)


def parse(blob: bytes) -> Node:
    """The tree of a flattened blob; property values come back as bytes.
    :class:`FdtError` for anything malformed (every offset is checked)."""
    if len(blob) < _HEADER.size:
        raise FdtError(f"{len(blob)} bytes is shorter than the FDT header")
    (magic, total, off_struct, off_strings, _off_rsv, version, _last, _boot, size_strings,
     size_struct) = _HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise FdtError(f"bad magic {magic:#x}")
    if version < FDT_LAST_COMP_VERSION or total > len(blob):
        raise FdtError(f"version {version} or totalsize {total} not readable here")
    if off_struct + size_struct > total or off_strings + size_strings > total:
        raise FdtError("the structure or strings block runs past totalsize")
    strings = blob[off_strings:off_strings + size_strings]
    pos, end = off_struct, off_struct + size_struct

    def word() -> int:
        nonlocal pos
        if pos + 4 > end:
            raise FdtError("the structure block ends inside a token")
        (w,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        return int(w)

    def cstr(buf: bytes, at: int, limit: int) -> tuple[str, int]:
        # The string at `at` and the offset just past its NUL.
        nul = buf.find(b"\0", at, limit)
        if nul < 0:
            raise FdtError(f"an unterminated string at {at}")
        return buf[at:nul].decode(errors="replace"), nul + 1

    stack: list[Node] = []
    root: Node | None = None
    while True:
        tok = word()
        if tok == FDT_NOP:
            continue
        if tok == FDT_BEGIN_NODE:
            name, pos = cstr(blob, pos, end)
            pos += -pos % 4
            node = Node(name)
            if stack:
                stack[-1].children.append(node)
            elif root is None:
                root = node
            else:
                raise FdtError("a second root node")
            stack.append(node)
        elif tok == FDT_PROP:
            if not stack:
                raise FdtError("a property outside any node")
            size, nameoff = word(), word()
            if pos + size > end or nameoff >= len(strings):
                raise FdtError("a property runs past the structure block or names no string")
            stack[-1].props[cstr(strings, nameoff, len(strings))[0]] = bytes(blob[pos:pos + size])
            pos += size + (-size % 4)
        elif tok == FDT_END_NODE:
            if not stack:
                raise FdtError("FDT_END_NODE without a node")
            stack.pop()
        elif tok == FDT_END:
            if stack or root is None:
                raise FdtError("FDT_END inside a node, or no root")
            return root
        else:
            raise FdtError(f"unknown token {tok:#x} at {pos - 4}")


def u32s(value: bytes) -> list[int]:
    """A parsed property's cells."""
    if len(value) % 4:
        raise FdtError(f"{len(value)} bytes is not a whole number of cells")
    return list(struct.unpack(f">{len(value) // 4}I", value))


def strs(value: bytes) -> list[str]:
    """A parsed property's string list."""
    return [s.decode(errors="replace") for s in value.split(b"\0")[:-1]]


__all__ = ["FdtError", "Node", "PropValue", "build", "cells", "encode_value", "parse", "strs", "u32s"]
