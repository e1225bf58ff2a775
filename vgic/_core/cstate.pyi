"""Type stubs for ``vgic._core.cstate``: the base class of every part's C state."""

class CState:
    """The C state of one part of a VM: what its MMIO handlers reach, its
    handler families, and the one buffer that holds all of its mutable state."""

    @property
    def ops_names(self) -> list[str]:
        """The handler families this part binds, in table order."""
    @property
    def opaque(self) -> bool:
        """True when a handler can change state outside the buffer (a replay
        is then validated whole before it runs, never rolled back)."""
    @property
    def state_nbytes(self) -> int:
        """Bytes of mutable state (the buffer replay rollback copies)."""

def check_bound(part: str, bound: list[str]) -> None:
    """ImportError unless ``bound`` (a part's handler-family names) covers
    every ops name of the part's frames in vgic.regmap.FRAMES."""
