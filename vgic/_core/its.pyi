"""Type stubs for ``vgic._core.its`` (twin: ``vgic._pure.its``): KVM's
emulated ITS - registers, command queue, translation, save/restore ABI."""
from typing import Any

import numpy as np
import numpy.typing as npt

from vgic.its_state import ItsArrays

from .cstate import CState
from .gic import Gic

class Its(CState):
    """The emulated ITS of a VM whose ``Gic`` has LPIs (``Gic(..., lpis=True)``);
    its frames (GITS, GITS_TRANSLATER) are served once attached to a ``mmio.Bus``.
    Guest memory is the Gic's (``Gic.attach_memory``)."""

    def __init__(self, gic: Gic, max_ites: int = ...) -> None: ...
    @property
    def max_ites(self) -> int:
        """The most ITEs this ITS holds (a MAPTI beyond fails, as KVM's -ENOMEM)."""
    @property
    def nr_ites(self) -> int:
        """The ITEs mapped now."""

    # ---- KVM's side ------------------------------------------------------------
    def signal_msi(self, devid: int, event: int) -> int:
        """KVM_SIGNAL_MSI with KVM_MSI_VALID_DEVID: 1 delivered, 0 blocked, or -EBUSY."""
    def signal_msi_batch(self, devids: npt.ArrayLike, events: npt.ArrayLike) -> npt.NDArray[np.int32]:
        """signal_msi for each (devid, event), in order, all checked first."""
    def save_tables(self) -> int:
        """KVM_DEV_ARM_ITS_SAVE_TABLES: 0 or a negative errno."""
    def restore_tables(self) -> int:
        """KVM_DEV_ARM_ITS_RESTORE_TABLES: 0 or a negative errno (everything freed on error)."""
    def reset(self) -> None:
        """KVM_DEV_ARM_ITS_CTRL_RESET."""
    def process_commands(self) -> None:
        """Run the queued commands now (an accepted GITS_CWRITER/GITS_CTLR write does)."""
    def command(self, dw0: int, dw1: int, dw2: int, dw3: int) -> int:
        """Run one command from its four words: KVM's internal result (0, E_ITS_*, -errno)."""

    # ---- named state -----------------------------------------------------------
    def arrays(self) -> ItsArrays:
        """The state as :class:`vgic.its_state.ItsArrays` (copies)."""
    def state(self) -> dict[str, Any]:
        """The named state (:mod:`vgic.its_state` layout)."""
    def load_state(self, state: Any) -> None:
        """Replace the whole state, checked first (``vgic.StateError``, nothing changed);
        every LPI an ITE maps must exist in the Gic with that many ITEs as its ``ite_count``."""
    def apply_arrays(self, a: ItsArrays) -> None:
        """Write arrays into the state (LPI references are the Gic's), checked first by
        ``its_state.check_arrays``: ``vgic.StateError`` (a ValueError), nothing changed."""


def plain_table_loop(memory: npt.NDArray[np.uint8], offsets: npt.ArrayLike, values: npt.ArrayLike) -> int:
    """The save/restore benchmark's baseline: write each 8-byte value at its
    offset, then read them all back; the XOR of what was read."""
def stripped_table_save(memory: npt.NDArray[np.uint8], offsets: npt.ArrayLike, ites: npt.NDArray[np.uint32],
                        lpi_bitmap: npt.NDArray[np.uint32], lpi_target: npt.NDArray[np.int32],
                        lpi_priority: npt.NDArray[np.uint8], prop_offset: int) -> None:
    """The floor of SAVE_TABLES: each ITE (pINTID, ICID) of ``ites`` written
    as KVM's ITE with ``next`` 1 at its offset (checked by
    ``vgic.guestmem.check_stripped_pair``)."""
def stripped_table_restore(memory: npt.NDArray[np.uint8], offsets: npt.ArrayLike, ites: npt.NDArray[np.uint32],
                           lpi_bitmap: npt.NDArray[np.uint32], lpi_target: npt.NDArray[np.int32],
                           lpi_priority: npt.NDArray[np.uint8], prop_offset: int) -> int:
    """The floor of RESTORE_TABLES: each entry decoded into ``ites``, the LPI of
    a pINTID met first made (exists bit, ICID as target, priority from its
    property byte); the number made.  ``ValueError`` at a pINTID outside the arrays."""
