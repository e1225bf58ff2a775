# The batch world-switch forms of the kernels with per-vCPU load, put,
# enter and exit steps (the arch timers, FP/SVE): one loop over checked
# vCPU indices calling a step with the kernel's C context.
from libc.stdint cimport int64_t

ctypedef void (*vcpu_step)(void *ctx, Py_ssize_t i) noexcept nogil

cdef inline void run_steps(vcpu_step step, void *ctx, const int64_t[::1] ids) noexcept nogil:
    # (ids come from vgic.ich.vcpu_indices: every one below the vCPU count)
    cdef Py_ssize_t k
    for k in range(ids.shape[0]):
        step(ctx, ids[k])
