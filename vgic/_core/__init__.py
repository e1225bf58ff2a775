"""Typed Cython kernels of vgic (installed as ``vgic._core``).

``vgic._pure`` holds a pure-Python twin of every module here, with the same
names and signatures; ``VGIC_PUREPYTHON=1`` makes the package use the twins.
"""
import sys as _sys

if _sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    # The kernels copy guest-memory table entries (little-endian in the KVM
    # ITS ABI) as host integers.
    raise ImportError("vgic._core needs a little-endian host; use VGIC_PUREPYTHON=1")
