"""Named state: what ``vm.state()`` and each part's ``state()`` return, and
how to compare two of them.

A state is plain data - dicts keyed by architectural or KVM names, lists,
ints, bools and strings - so it compares with ``==``, prints, and
serialises without custom types.  :func:`diff` says where two differ.
"""
from __future__ import annotations

from typing import Any

from vgic.errors import StateError


def diff(a: Any, b: Any, path: str = "state", limit: int | None = None) -> list[str]:
    """The paths at which two states differ, as ``"path: a vs b"`` lines
    (at most ``limit`` of them); empty when they are equal.  A bool and an
    int of the same value differ: a state's types are part of it."""
    out: list[str] = []
    _diff(a, b, path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[str], limit: int | None) -> None:
    if limit is not None and len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            out.append(f"{path}: keys {sorted(map(repr, set(a) ^ set(b)))} are in one only")
            return
        for key in a:
            _diff(a[key], b[key], f"{path}.{key}", out, limit)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} entries vs {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out, limit)
        return
    if type(a) is not type(b) or a != b:
        out.append(f"{path}: {a!r} vs {b!r}")


def drop(state: Any, keys: set[str] | frozenset[str]) -> Any:
    """A copy of ``state`` without the entries named ``keys`` at any depth
    (for example the model's queue stamps ``{"seq", "seq_counter"}``, which
    KVM's userspace ABI does not carry)."""
    if isinstance(state, dict):
        return {k: drop(v, keys) for k, v in state.items() if k not in keys}
    if isinstance(state, list):
        return [drop(v, keys) for v in state]
    return state


#: The model's queue-order stamps (see :mod:`vgic.vgic_v3`): not part of
#: what KVM's device ABI saves and restores.
STAMPS = frozenset({"seq", "seq_counter"})

__all__ = ["STAMPS", "StateError", "diff", "drop"]
