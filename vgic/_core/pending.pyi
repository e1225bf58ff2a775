"""Type stubs for ``vgic._core.pending`` (twin: ``vgic._pure.pending``):
per-LPI read-test-clear against one scan of a pending table."""
import numpy as np
import numpy.typing as npt

def sync_per_lpi(table: npt.NDArray[np.uint8], intids: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """For each LPI of ``intids``: its pending bit, cleared in ``table`` when set."""
def sync_scan(table: npt.NDArray[np.uint8], mapped: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """One scan of ``table`` from INTID 8192: the set bits whose INTID is in
    the ``mapped`` bitmap, taken (cleared) and returned in increasing order."""
