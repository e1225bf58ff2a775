# The vGICv3 distributor and redistributors' C state (gic.pyx), shared with
# the kernels that work on it (aplist.pyx).
from libc.stdint cimport uint32_t

from vgic._core.cstate cimport CState
from vgic._core.gicstate cimport GicState


cdef class Gic(CState):
    cdef GicState st
    cdef object _bits, _priority, _route, _target, _mpidr, _pendbaser, _gicr_ctlr, _seq, _scalars
    cdef object _queued_on, _lpi_refs, _lpi_exists, _lpi_live
    cdef object _ap_next, _ap_prev, _ap_head, _ap_tail, _ap_len, _in_lr, _memory
    cdef object _hw_mask, _hw_pintid, _host_active
    cdef void _reset(self) noexcept
    cdef int _ready(self) except -1
    cdef uint32_t _line_mask(self, object vcpu_arg, object intid_arg, uint32_t *bank) except? 0
    cdef int _vcpu(self, object vcpu) except -1
    cdef uint32_t _irq(self, object vcpu, object intid_arg, int *vcpu_out) except 0xFFFFFFFF
