"""Selects the implementation: the Cython core, or its pure-Python twin when
the environment variable ``VGIC_PUREPYTHON`` is set to anything but ``""``/``"0"``."""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any
from types import SimpleNamespace
from typing import Any

PURE = os.environ.get("VGIC_PUREPYTHON", "") not in ("", "0")

if PURE:
    from vgic._pure import aplist, icv, lr, mmio
else:
    try:
        from vgic._core import aplist, icv, lr, mmio  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "vgic's compiled core (vgic._core) is not importable: install the package "
            "with `pip install .` (and do not import it from the source tree), or set "
            "VGIC_PUREPYTHON=1 to use the pure-Python twin"
        ) from exc

#: "core" or "pure": the implementation this process uses.
NAME = "pure" if PURE else "core"



def modules(name: str | None) -> tuple[str, Any]:
    """The implementation ``name`` ("core", "pure", or None for this process's
    default) as ``(name, namespace)`` with attributes ``aplist``, ``icv``,
    ``lr`` and ``mmio``.  Lets one process hold VMs of both (differential testing)."""
    if name is None:
        name = NAME
    if name == "pure":
        from vgic._pure import aplist as p_aplist, icv as p_icv, lr as p_lr, mmio as p_mmio
        return name, SimpleNamespace(aplist=p_aplist, icv=p_icv, lr=p_lr, mmio=p_mmio)
    if name == "core":
        try:
            from vgic._core import aplist as c_aplist, icv as c_icv, lr as c_lr, mmio as c_mmio
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("backend 'core': vgic._core is not importable "
                              "(install the package with `pip install .`)") from exc
        return name, SimpleNamespace(aplist=c_aplist, icv=c_icv, lr=c_lr, mmio=c_mmio)
    raise ValueError(f"backend {name!r} is not 'core', 'pure' or None")


__all__ = ["aplist", "icv", "lr", "mmio", "modules", "NAME", "PURE"]
