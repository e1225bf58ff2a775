"""The version of vgic, written once: the package metadata reads it from here."""
__version__ = "0.4.0.dev0"
