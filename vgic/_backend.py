"""Selects the implementation: the Cython core, or its pure-Python twin when
the environment variable ``VGIC_PUREPYTHON`` is set to anything but ``""``/``"0"``."""
from __future__ import annotations

import os

PURE = os.environ.get("VGIC_PUREPYTHON", "") not in ("", "0")

if PURE:
    from vgic._pure import aplist, lr, mmio
else:
    try:
        from vgic._core import aplist, lr, mmio
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "vgic's compiled core (vgic._core) is not importable: install the package "
            "with `pip install .` (and do not import it from the source tree), or set "
            "VGIC_PUREPYTHON=1 to use the pure-Python twin"
        ) from exc

#: "core" or "pure": the implementation this process uses.
NAME = "pure" if PURE else "core"

__all__ = ["aplist", "lr", "mmio", "NAME", "PURE"]
