"""pure-Python twins of vgic._core modules."""
