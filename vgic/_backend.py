"""Selects the implementation: the Cython core, or its pure-Python twin when
the environment variable ``VGIC_PUREPYTHON`` is set to anything but ``""``/``"0"``."""
from __future__ import annotations

import importlib
import os
from types import SimpleNamespace
from typing import Any

PURE = os.environ.get("VGIC_PUREPYTHON", "") not in ("", "0")

#: The kernel modules every implementation provides, under the same names
#: (``vgic._core.<name>`` and its twin ``vgic._pure.<name>``).
KERNELS = ("aplist", "fpsimd", "gic", "icv", "its", "lr", "mmio", "pending", "timer")

#: "core" or "pure": the implementation this process uses.
NAME = "pure" if PURE else "core"

_loaded: dict[str, SimpleNamespace] = {}


def modules(name: str | None) -> tuple[str, Any]:
    """The implementation ``name`` ("core", "pure", or None for this process's
    default) as ``(name, namespace)`` with one attribute per kernel module
    of :data:`KERNELS`.  Lets one process hold VMs of both (differential testing)."""
    if name is None:
        name = NAME
    if name not in ("core", "pure"):
        raise ValueError(f"backend {name!r} is not 'core', 'pure' or None")
    if name not in _loaded:
        package = "vgic._core" if name == "core" else "vgic._pure"
        try:
            mods = {k: importlib.import_module(f"{package}.{k}") for k in KERNELS}
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "vgic's compiled core (vgic._core) is not importable: install the package "
                "with `pip install .` (or `pip install -e .` for development), or set "
                "VGIC_PUREPYTHON=1 to use the pure-Python twin") from exc
        _loaded[name] = SimpleNamespace(**mods)
    return name, _loaded[name]


_, _default = modules(None)
aplist, fpsimd, gic, icv, its, lr, mmio, pending, timer = (getattr(_default, k) for k in KERNELS)

__all__ = ["KERNELS", "NAME", "PURE", "aplist", "fpsimd", "gic", "icv", "its", "lr", "mmio", "modules",
           "pending", "timer"]
