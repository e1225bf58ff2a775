# The vGICv3 distributor and redistributors' C state (gic.pyx), shared with
# the kernels that work on it (aplist.pyx).
from libc.stdint cimport uint32_t

from vgic._core.cstate cimport CState
from vgic._core.gicstate cimport GicState


cdef class Gic(CState):
    cdef GicState st
    cdef object _bits, _priority, _route, _target, _mpidr, _pendbaser, _gicr_ctlr, _seq, _scalars
    cdef void _reset(self) noexcept
    cdef int _ready(self) except -1
    cdef uint32_t _line_mask(self, int vcpu, uint32_t intid, uint32_t *bank) except? 0
    cdef uint32_t _bank_checked(self, int vcpu, uint32_t intid) except? 0xFFFFFFFF
