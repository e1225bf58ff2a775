# Python arguments of the kernels' public methods, converted once and
# checked before any C code uses them.  An index is any integer (a Python or
# numpy int, or any __index__ type; not a bool, a float or a string), taken
# through __index__ exactly once: TypeError otherwise, ValueError outside
# its range.  The twins do the same with vgic.ich.check_int.
from cpython.number cimport PyNumber_Index


cdef inline object int_arg(object value, str name, object lo, object hi):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        v = PyNumber_Index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if not lo <= v <= hi:
        if hi <= 0xFFFF:
            raise ValueError(f"{name} {v} is outside {lo}..{hi}")
        raise ValueError(f"{name} {v:#x} is outside {lo:#x}..{hi:#x}")
    return v


cdef inline Py_ssize_t index_arg(object value, str name, Py_ssize_t n) except -1:
    # An index in 0..n-1.
    return int_arg(value, name, 0, n - 1)
