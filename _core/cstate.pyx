# cython: language_level=3
"""The base class of every part's C state (see ``cstate.pxd``)."""
from libc.stdint cimport uint8_t


cdef class CState:
    """The C state of one part of a VM: what its MMIO handlers reach, its
    handler families, and the one buffer that holds all of its mutable state."""

    cdef int _set_buffer(self, object arr) except -1:
        # `arr`: a C-contiguous uint8 numpy array that this object keeps alive.
        cdef uint8_t[::1] view = arr
        self._buf = arr
        self.buf = &view[0] if view.shape[0] else NULL
        self.buf_len = view.shape[0]
        return 0

    @property
    def ops_names(self):
        """The handler families this part binds, in table order."""
        return [self.ops[i].name.decode() for i in range(self.nops)]

    @property
    def opaque(self):
        """True when a handler can change state outside the buffer (a replay
        is then validated whole before it runs, never rolled back)."""
        return self.opaque

    @property
    def state_nbytes(self):
        """Bytes of mutable state (the buffer replay rollback copies)."""
        return self.buf_len


def check_bound(str part, list bound):
    """ImportError unless ``bound`` (a part's handler-family names) covers
    every ops name of the part's frames in vgic.regmap.FRAMES."""
    from vgic import regmap
    needed = {row.ops for f in regmap.FRAMES if f.part == part for row in f.regions}
    if needed - set(bound):
        raise ImportError(f"the {part} part binds no handlers for ops {sorted(needed - set(bound))}")
