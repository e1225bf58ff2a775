"""Typed Cython kernels of vgic (installed as ``vgic._core``).

``vgic._pure`` holds a pure-Python twin of every module here, with the same
names and signatures; ``VGIC_PUREPYTHON=1`` makes the package use the twins.
"""
