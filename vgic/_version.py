"""The version of vgic, written once: the package metadata reads it from here."""
__version__ = "0.5.0.dev0"
